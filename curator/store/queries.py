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
