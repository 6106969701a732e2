"""What every source shares: records, PNG encoding, hashing and the batched writer.

A source first checks its whole input and arguments (``check_batch_size``,
headers, shapes, label counts), then yields batches of ``Record``s;
``write_records`` stores them in one transaction (flushed batch by batch, so
memory holds one batch of decoded images at most). A failure anywhere rolls
the whole ingest back, so the database is left exactly as it was;
``--skip-bad`` instead reports and skips. PNG files made from arrays are
staged and moved into place only after the commit (``staging.py``), so a
killed ingest leaves no files either. An input with nothing to store is
refused rather than creating an empty dataset. Re-ingest is idempotent: the
URI is unique per dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from curator.exceptions import CuratorError, ValidationError

DEFAULT_BATCH = 1024
#: Sample columns a Record fills.
COLUMNS = ("uri", "sha256", "width", "height", "channels", "split", "gt_label")


@dataclasses.dataclass(frozen=True)
class Record:
    uri: str
    sha256: str
    width: int
    height: int
    channels: int
    split: str | None = None
    gt_label: str | None = None
    #: PNG bytes to write at ``uri`` once the row is committed (sources that make files).
    data: bytes | None = dataclasses.field(default=None, repr=False, compare=False)


def check_batch_size(batch_size) -> int:
    """A batch size must be a whole number >= 1; checked before any work."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(
            f"--batch-size {batch_size!r}: must be a whole number of 1 or more (default {DEFAULT_BATCH})"
        )
    return batch_size


@dataclasses.dataclass
class IngestReport:
    dataset: str
    seen: int = 0
    added: int = 0
    existing: int = 0
    duplicates: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    total: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_png(pixels: np.ndarray) -> bytes:
    """Deterministic PNG bytes of a uint8 (h, w) or (h, w, c) array."""
    from PIL import Image

    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def channels_of(mode: str) -> int:
    """Channels of the image as curator decodes it: gray 1, colour 3, with alpha 4."""
    if mode in ("1", "L", "I", "F", "I;16"):
        return 1
    return 4 if "A" in mode else 3


def png_records(
    images: np.ndarray, start: int, folder: Path, split: str | None, labels: Sequence[str | None] | None
) -> list[Record]:
    """Encode one batch of arrays as PNG records named by position; ``write_records`` writes the files."""
    folder = Path(folder).resolve()
    out = []
    for i, pixels in enumerate(images):
        data = encode_png(pixels)
        h, w = pixels.shape[:2]
        c = 1 if pixels.ndim == 2 else pixels.shape[2]
        out.append(
            Record(
                uri=str(folder / f"{start + i:07d}.png"),
                sha256=sha256_bytes(data),
                width=int(w),
                height=int(h),
                channels=int(c),
                split=split,
                gt_label=None if labels is None else labels[i],
                data=data,
            )
        )
    return out


def media_folder(settings, dataset: str, name: str) -> Path:
    """Where the PNG files of source ``name`` go: the checked dataset name, inside the
    workspace's media folder, always (called before the first file is written)."""
    from curator.names import dataset_name, inside

    return inside(settings.media_dir, dataset_name(dataset), name or "_")


def label_strings(labels: np.ndarray | Sequence | None, n: int, name: str) -> list[str] | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ValidationError(
            f"{name}: expected {n} labels in a 1-D array, got shape {labels.shape}; "
            "pass one label per image"
        )
    return [str(x) for x in labels.tolist()]


def sort_classes(names: Iterable[str]) -> list[str]:
    """Numeric names in numeric order ("2" before "10"), then the rest alphabetically."""
    names = set(names)
    numeric = sorted((n for n in names if n.lstrip("-").isdigit()), key=int)
    return numeric + sorted(names - set(numeric))


def write_records(
    settings,
    dataset: str,
    batches: Iterable[list[Record]],
    report: IngestReport,
    total: int | None = None,
    session=None,
    classes: Sequence[str] | None = None,
) -> IngestReport:
    """Store the records of all batches in one transaction (see module docstring).

    Files of records that carry ``data`` are staged and appear in the media
    folder only once their rows are committed. Inside the caller's ``session``
    (a version import writes samples and version together) records must name
    files that exist already: the caller's commit cannot publish staged files.
    """
    from curator.ingest.staging import Staging, recover
    from curator.names import dataset_name
    from curator.settings import private_umask, private_workspace

    dataset = dataset_name(dataset)  # one policy: checked, lower case (`M` and `m` are one dataset)
    if session is not None:
        batches = list(batches)
        if any(r.data is not None for b in batches for r in b):
            raise ValueError("write_records(session=...) takes records of existing files only")
        _store(settings, dataset, batches, report, total, None, session=session, classes=classes)
        return report

    private_workspace(settings.workspace)
    with private_umask():
        recover(settings)
        with Staging(settings.media_dir) as staging:
            _store(settings, dataset, batches, report, total, staging, classes=classes)
            try:
                staging.publish()
            except OSError as exc:
                raise CuratorError(
                    f"{report.dataset}: the samples are stored but their image files could not be moved "
                    f"into {settings.media_dir} ({exc}); fix the cause, then run `curator doctor --fix` "
                    "(or any ingest) to finish"
                ) from None
    return report


def _store(settings, dataset, batches, report, total, staging, session=None, classes=None) -> None:
    """The write step of an ingest: every batch in one transaction (the caller's ``session``, or one
    opened by ``curator.steps.run_step``), through ``curator.store.samples``."""
    from curator.steps import run_step

    if session is not None:
        _write(session, dataset, batches, report, total, staging, classes)
    else:
        run_step(settings, write=lambda s, _: _write(s, dataset, batches, report, total, staging, classes))


def _write(s, dataset, batches, report, total, staging, declared=None) -> None:
    from curator._progress import progress
    from curator.store import samples as store_samples

    store_samples.lock_dataset_name(s, dataset)
    ds, stored_classes = store_samples.find_or_create_dataset(s, dataset)
    first_of = store_samples.first_of_hashes(s, ds)
    classes = set(stored_classes)
    for batch in progress(batches, total=total, desc=f"ingest {dataset}", weight=len):
        report.seen += len(batch)
        known = store_samples.known_uris(s, ds, [r.uri for r in batch])
        new = [r for r in batch if r.uri not in known]
        report.existing += len(batch) - len(new)
        for r in batch:
            if r.data is None:
                continue
            if r.uri not in known or (known[r.uri] == r.sha256 and not Path(r.uri).exists()):
                staging.put(Path(r.uri), r.data)  # a known row whose file is gone gets it back
        if not new:
            continue
        rows = [{**{c: getattr(r, c) for c in COLUMNS}, "duplicate_of_id": first_of.get(r.sha256)} for r in new]
        ids = store_samples.insert_samples(s, ds, rows)
        fixes = {}
        for row, sid in zip(rows, ids):
            if row["duplicate_of_id"] is not None:
                report.duplicates += 1
            elif row["sha256"] in first_of:  # an earlier copy in this same batch
                fixes[sid] = first_of[row["sha256"]]
                report.duplicates += 1
            else:
                first_of[row["sha256"]] = sid
            if row["gt_label"] is not None:
                classes.add(row["gt_label"])
        store_samples.mark_duplicates(s, fixes)
        report.added += len(new)
    if report.seen == 0:
        raise nothing_to_ingest(report)
    listed = store_samples.class_list(s, ds)
    if declared is not None or listed.declared:  # checked against the ground truth, in this transaction
        store_samples.declare_classes(s, ds, declared if declared is not None else listed.names, dataset=dataset)
    elif classes:
        store_samples.set_classes(s, ds, sort_classes(classes))
    report.total = store_samples.count(s, ds)


def nothing_to_ingest(report: IngestReport) -> ValidationError:
    """An input with no usable image is refused: it must not create an empty dataset."""
    if report.skipped:
        path = report.skipped[0][0]
        return ValidationError(
            f"all {len(report.skipped)} images were bad and skipped, nothing to ingest into "
            f"{report.dataset!r} (first: {path}); fix or replace the files"
        )
    return ValidationError(f"no images to ingest into {report.dataset!r}; check the input")


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
