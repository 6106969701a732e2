"""Image folders, searched recursively; class-named subfolders give ground truth.

Each file is fully decoded once to catch corrupt or truncated images before
anything is stored; its sha256 is taken over the file's bytes.
"""

from __future__ import annotations

from pathlib import Path

from curator.exceptions import ValidationError
from curator.ingest._common import (
    DEFAULT_BATCH,
    IngestReport,
    Record,
    batched,
    channels_of,
    sha256_bytes,
    write_records,
)

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def read_record(path: Path, root: Path, split: str | None, class_folders: bool) -> Record:
    """Hash and decode one image file; raise ValidationError naming it when it is bad."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            width, height, mode = img.width, img.height, img.mode
    except FileNotFoundError:
        raise ValidationError(f"image {path} disappeared while ingesting; run the ingest again") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValidationError(
            f"image {path} is corrupt or truncated ({exc}); replace or delete it, "
            "or pass --skip-bad to skip such files"
        ) from None
    rel = path.relative_to(root)
    label = rel.parts[0] if class_folders and len(rel.parts) > 1 else None
    return Record(
        uri=str(path.resolve()),
        sha256=sha256_bytes(data),
        width=width,
        height=height,
        channels=channels_of(mode),
        split=split,
        gt_label=label,
    )


def ingest_folder(
    root: str | Path,
    *,
    dataset: str,
    split: str | None = None,
    class_folders: bool = True,
    skip_bad: bool = False,
    settings=None,
    batch_size: int = DEFAULT_BATCH,
) -> IngestReport:
    """Ingest every image under ``root``; with ``class_folders`` the first sub-folder is the class."""
    from curator.settings import load_settings

    settings = settings or load_settings()
    root = Path(root)
    if not root.is_dir():
        raise ValidationError(f"image folder {root} does not exist or is not a folder; check the path")
    paths = list_images(root)
    if not paths:
        raise ValidationError(
            f"image folder {root} holds no images ({', '.join(sorted(EXTENSIONS))}); check the path"
        )
    report = IngestReport(dataset)

    def batches():
        for chunk in batched(paths, batch_size):
            records = []
            for path in chunk:
                try:
                    records.append(read_record(path, root, split, class_folders))
                except ValidationError as exc:
                    if not skip_bad:
                        raise
                    report.skipped.append((str(path), str(exc)))
            yield records

    return write_records(settings, dataset, batches(), report, total=len(paths))
