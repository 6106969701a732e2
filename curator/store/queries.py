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
    """``curator.store.samples.summaries`` in a transaction of its own (for scripts and tests)."""
    from curator.store import samples

    with transaction(settings) as s:
        return samples.summaries(s)


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


def annotated_sample_ids(session: Session, sample_ids, *, tool: str | None = None, live: bool = True) -> set[int]:
    """Those of ``sample_ids`` that have an annotation (``live``: one not deleted; of ``tool``)."""
    from curator.store.schema import Annotation

    wanted = sorted({int(i) for i in sample_ids})
    out: set[int] = set()
    for s0 in range(0, len(wanted), 5000):
        q = select(Annotation.sample_id).where(Annotation.sample_id.in_(wanted[s0: s0 + 5000]))
        if tool is not None:
            q = q.where(Annotation.tool == tool)
        if live:
            q = q.where(Annotation.deleted.is_(False))
        out.update(int(i) for i in session.scalars(q))
    return out


def add_annotations(session: Session, tool: str, answers: dict[int, str], *, annotator: str | None = None) -> int:
    """Store one answer per sample of ``answers`` (sample id -> label) by ``tool``, external id
    ``<tool>-<sample id>``, skipping samples that tool answered already; how many were added."""
    from sqlalchemy import insert

    from curator.store.schema import Annotation

    done = annotated_sample_ids(session, answers, tool=tool, live=False)
    rows = [{"sample_id": int(sid), "tool": tool, "external_id": f"{tool}-{int(sid)}", "annotator": annotator,
             "label": label, "skipped": False, "deleted": False}
            for sid, label in answers.items() if int(sid) not in done]
    if rows:
        session.execute(insert(Annotation), rows)
    return len(rows)
