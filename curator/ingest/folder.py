"""Image folders, searched recursively; class-named subfolders give ground truth.

Each file is fully decoded once to catch corrupt or truncated images before
anything is stored; its sha256 is taken over the file's bytes. A header that
announces more pixels than the limit (``curator.images.max_pixels``) is
refused before decoding, and an unreadable file or folder is reported as a
permission problem, not as damage.
"""

from __future__ import annotations

import os
from pathlib import Path

from curator.exceptions import ValidationError
from curator.images import max_pixels, open_image
from curator.ingest._common import (
    DEFAULT_BATCH,
    IngestReport,
    Record,
    batched,
    channels_of,
    check_batch_size,
    sha256_bytes,
    write_records,
)

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})


def permission_denied(path, what: str = "file") -> ValidationError:
    return ValidationError(
        f"{what} {path} cannot be read: permission denied; give this user read access "
        f"(chmod u+r{'x' if what == 'folder' else ''}) or run curator as its owner"
    )


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` in a fixed order (sorted); an unreadable sub-folder is an error."""

    def refuse(exc: OSError):
        if isinstance(exc, PermissionError):
            raise permission_denied(exc.filename, "folder")
        raise ValidationError(f"folder {exc.filename} cannot be listed ({exc.strerror}); check it") from None

    found = []
    for dirpath, _, filenames in os.walk(root, onerror=refuse):
        for name in filenames:
            p = Path(dirpath) / name
            if p.suffix.lower() in EXTENSIONS and p.is_file():
                found.append(p)
    return sorted(found)


def read_record(path: Path, root: Path, split: str | None, class_folders: bool,
                limit: int | None = None) -> Record:
    """Hash and decode one image file; raise ValidationError naming it when it is bad."""
    import io

    from PIL import UnidentifiedImageError

    try:
        data = path.read_bytes()
        with open_image(io.BytesIO(data), path, limit) as img:
            img.load()
            width, height, mode = img.width, img.height, img.mode
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF says: turn a quarter; decode does
                width, height = height, width
    except ValidationError:
        raise
    except FileNotFoundError:
        raise ValidationError(f"image {path} disappeared while ingesting; run the ingest again") from None
    except PermissionError:
        raise permission_denied(path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "not an image format PIL can read" if isinstance(exc, UnidentifiedImageError) else exc
        raise ValidationError(
            f"image {path} is corrupt or truncated ({reason}); replace or delete it, "
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
    max_image_pixels: int | None = None,
    classes=None,
) -> IngestReport:
    """Ingest every image under ``root``; with ``class_folders`` the first sub-folder is the class.

    ``max_image_pixels`` bounds width x height (default ``curator.images.max_pixels()``).
    """
    from curator.settings import load_settings

    settings = settings or load_settings()
    check_batch_size(batch_size)
    limit = max_pixels(max_image_pixels)
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
                    records.append(read_record(path, root, split, class_folders, limit))
                except ValidationError as exc:
                    if not skip_bad:
                        raise
                    report.skipped.append((str(path), str(exc)))
            yield records

    return write_records(settings, dataset, batches(), report, total=len(paths), classes=classes)
