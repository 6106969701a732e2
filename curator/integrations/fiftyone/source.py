"""An existing FiftyOne dataset as a curator pool.

Each image sample's file is hashed and decoded by the same reader as an
image folder (``curator.ingest.folder.read_record``) and stored by the same
batched writer, in one transaction: a missing or corrupt file fails the
whole import (nothing is stored) unless ``skip_bad`` skips and reports it.
A ``Classification`` field becomes benchmark ground truth (``gt_label``);
re-importing adds nothing (the file path is unique per dataset).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from curator.exceptions import ValidationError
from curator.ingest._common import DEFAULT_BATCH, IngestReport, batched, write_records
from curator.ingest.folder import read_record

#: Label fields tried, in order, when none is named.
DEFAULT_LABEL_FIELDS = ("ground_truth", "label", "labels")


def classification_fields(fo_ds) -> list[str]:
    fo = _fo()
    out = []
    for name, field in fo_ds.get_field_schema().items():
        if getattr(field, "document_type", None) is fo.Classification:
            out.append(name)
    return sorted(out)


def _fo():
    from curator.integrations.fiftyone._fo import fiftyone

    return fiftyone()


def _label_field(fo_ds, label_field: str | None) -> str | None:
    fields = classification_fields(fo_ds)
    if label_field is None:
        return next((f for f in DEFAULT_LABEL_FIELDS if f in fields), None)
    if label_field not in fields:
        raise ValidationError(
            f"label_field: {fo_ds.name!r} has no Classification field {label_field!r} "
            f"(Classification fields: {', '.join(fields) or 'none'}); pick one of them or omit it"
        )
    return label_field


def import_dataset(
    settings,
    fo_name: str,
    dataset: str,
    *,
    label_field: str | None = None,
    split: str | None = None,
    skip_bad: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> IngestReport:
    """Ingest the image samples of FiftyOne dataset ``fo_name`` into curator dataset ``dataset``.

    ``label_field`` names a ``Classification`` field (default: the first of
    ground_truth, label, labels that exists); ``split`` is stored on every
    sample (default: a sample's ``train``/``test``/``validation`` tag).
    """
    from curator.integrations.fiftyone._fo import load_fo_dataset

    fo_ds = load_fo_dataset(fo_name)
    if len(fo_ds) == 0:
        raise ValidationError(f"FiftyOne dataset {fo_name!r} is empty; add image samples to it first")
    if fo_ds.media_type != "image":
        raise ValidationError(
            f"FiftyOne dataset {fo_name!r} holds {fo_ds.media_type} samples; curator pools are images"
        )
    field = _label_field(fo_ds, label_field)
    paths = fo_ds.values("filepath")
    labels = fo_ds.values(f"{field}.label") if field else [None] * len(paths)
    tags = fo_ds.values("tags")
    missing = [p for p in paths if not Path(p).is_file()]
    report = IngestReport(dataset)
    if missing and not skip_bad:
        raise ValidationError(
            f"{len(missing)} of {len(paths)} files of FiftyOne dataset {fo_name!r} are missing, "
            f"e.g. {missing[0]}; restore them, or pass --skip-bad to import the others"
        )
    rows = list(zip(paths, labels, tags))

    def batches():
        for chunk in batched(rows, batch_size):
            records = []
            for path, label, sample_tags in chunk:
                p = Path(path)
                try:
                    rec = read_record(p, p.parent, split or _split_of(sample_tags), class_folders=False)
                except ValidationError as exc:
                    if not skip_bad:
                        raise ValidationError(f"FiftyOne dataset {fo_name!r}: {exc}") from None
                    report.skipped.append((str(path), str(exc)))
                    continue
                if label is not None:
                    rec = dataclasses.replace(rec, gt_label=str(label))
                records.append(rec)
            yield records

    return write_records(settings, dataset, batches(), report, total=len(rows))


SPLIT_TAGS = {"train": "train", "test": "test", "val": "validation", "validation": "validation"}


def _split_of(tags) -> str | None:
    found = {SPLIT_TAGS[t] for t in tags or () if t in SPLIT_TAGS}
    return found.pop() if len(found) == 1 else None
