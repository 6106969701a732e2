"""Read helpers: functions of a session (or settings) returning plain data, never ORM objects."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from curator.exceptions import NotFoundError
from curator.names import dataset_name
from curator.store.schema import Dataset, Sample
from curator.store.session import transaction


def dataset_id(session: Session, name: str) -> int:
    """The id of dataset ``name``, or NotFoundError listing the known names.

    The name is checked and compared case-insensitively (``curator.names``):
    ``M`` and ``m`` are one dataset, and a name that could not be created is
    refused here too, with the rule it breaks.
    """
    name = dataset_name(name)
    ds = session.scalar(select(Dataset.id).where(func.lower(Dataset.name) == name).order_by(Dataset.id))
    if ds is None:
        known = session.scalars(select(Dataset.name).order_by(Dataset.name)).all()
        raise NotFoundError(
            f"dataset {name!r} does not exist (known: {', '.join(known) or 'none'}); "
            "create it with: curator ingest PATH --dataset NAME"
        )
    return ds


def dataset_classes(session: Session, name: str) -> list[str]:
    return list(session.scalar(select(Dataset.classes).where(Dataset.id == dataset_id(session, name))) or [])


def count_with_truth(session: Session, dataset: int, split: str | None = None) -> int:
    """Samples of ``dataset`` (of ``split`` if given) that have a ground-truth label."""
    q = select(func.count()).where(Sample.dataset_id == dataset, Sample.gt_label.is_not(None))
    if split:
        q = q.where(Sample.split == split)
    return session.scalar(q)


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


def fetch_all(session: Session, stmt) -> list[tuple]:
    """All rows of a large read as plain tuples straight from the driver.

    Skips SQLAlchemy's per-row objects, which cost more than the query itself
    at a million rows. Parameters (ids, names) are rendered inline with
    SQLAlchemy's literal quoting, which escapes strings.
    """
    conn = session.connection()
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    cur = conn.connection.cursor()
    try:
        cur.execute(sql)
        return cur.fetchall()
    finally:
        cur.close()


def agreed_labels(session: Session, dataset: int) -> dict[int, tuple[str, float, int]]:
    """sample_id -> (label, agreement, n): ``curator.store.annotations.agreed_labels``, the one definition
    (kept here because the loop, rounds and versions import it from this module)."""
    from curator.store.annotations import agreed_labels as agreed

    return agreed(session, dataset)


def resolve_dataset(session: Session, name: str | None) -> tuple[int, str]:
    """(id, name) of dataset ``name``; with None, of the only dataset (a command's default ``--dataset``),
    else a one-line error listing the datasets to choose from."""
    from curator.exceptions import ValidationError

    if name is not None:
        ds = dataset_id(session, name)
        return ds, session.scalar(select(Dataset.name).where(Dataset.id == ds))
    rows = session.execute(select(Dataset.id, Dataset.name).order_by(Dataset.name)).all()
    if len(rows) == 1:
        return int(rows[0][0]), rows[0][1]
    if not rows:
        raise NotFoundError("no dataset exists yet; create one with: curator ingest PATH --dataset NAME")
    raise ValidationError(f"several datasets exist ({', '.join(r[1] for r in rows)}); pass --dataset NAME")
