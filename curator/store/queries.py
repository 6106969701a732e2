"""Read helpers: functions of a session (or settings) returning plain data, never ORM objects."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from curator.exceptions import NotFoundError
from curator.store.models import Dataset, Sample
from curator.store.session import transaction


def dataset_id(session: Session, name: str) -> int:
    """The id of dataset ``name``, or NotFoundError listing the known names."""
    ds = session.scalar(select(Dataset.id).where(Dataset.name == name))
    if ds is None:
        known = session.scalars(select(Dataset.name).order_by(Dataset.name)).all()
        raise NotFoundError(
            f"dataset {name!r} does not exist (known: {', '.join(known) or 'none'}); "
            "create it with: curator ingest PATH --dataset NAME"
        )
    return ds


def dataset_classes(session: Session, name: str) -> list[str]:
    dataset_id(session, name)
    return list(session.scalar(select(Dataset.classes).where(Dataset.name == name)) or [])


def dataset_summaries(settings) -> list[dict]:
    with transaction(settings) as s:
        out = []
        for ds in s.scalars(select(Dataset).order_by(Dataset.name)):
            splits = dict(
                s.execute(
                    select(func.coalesce(Sample.split, "-"), func.count())
                    .where(Sample.dataset_id == ds.id)
                    .group_by(Sample.split)
                ).all()
            )
            dups = s.scalar(
                select(func.count()).where(Sample.dataset_id == ds.id, Sample.duplicate_of_id.is_not(None))
            )
            out.append({
                "name": ds.name,
                "samples": sum(splits.values()),
                "splits": splits,
                "duplicates": dups,
                "classes": list(ds.classes or []),
            })
        return out


def agreed_labels(session: Session, dataset: int) -> dict[int, tuple[str, float, int]]:
    """Current agreed label of every annotated sample: sample_id -> (label, agreement, n).

    The one definition of "the label of a sample", used by versions, the loop
    and FiftyOne: the most frequent label among live (not deleted, not
    skipped) annotations; ties go to the most recent annotation. ``agreement``
    is the fraction of annotators who gave the agreed label.
    """
    from collections import Counter, defaultdict

    from curator.store.models import Annotation

    # Core connection, not the ORM session: a million rows are read without ORM overhead.
    rows = session.connection().execute(
        select(Annotation.sample_id, Annotation.label)
        .join(Sample, Sample.id == Annotation.sample_id)
        .where(
            Sample.dataset_id == dataset,
            Annotation.deleted.is_(False),
            Annotation.skipped.is_(False),
        )
        .order_by(Annotation.sample_id, Annotation.id)
    ).all()
    by_sample: dict[int, list[str]] = defaultdict(list)
    out = {}
    for sample_id, label in rows:
        by_sample[sample_id].append(label)
    for sample_id, labels in by_sample.items():
        if len(labels) == 1:  # the common case, without a Counter
            out[sample_id] = (labels[0], 1.0, 1)
            continue
        counts = Counter(labels)
        top = max(counts.values())
        winner = next(lab for lab in reversed(labels) if counts[lab] == top)
        out[sample_id] = (winner, top / len(labels), len(labels))
    return out
