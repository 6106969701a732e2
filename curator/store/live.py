"""The live loop's aggregate: its generations (one per retrain) and the queue order each wrote.

The queue itself is not stored twice: it is the items of the dataset's open
rounds that have no live answer (``queue``). What is stored here is what the
database cannot derive: when the loop last retrained (the label count, so a
restarted loop knows when the next retrain is due) and the order it gave the
unstarted tasks (so a restarted loop writes the same order to the server).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from curator.store.queries import fetch_all
from curator.store.schema import Annotation, LiveGeneration, LiveRank, Round, RoundItem, Sample

__all__ = ["Generation", "QueueItem", "latest_generation", "generations", "add_generation", "ranks_of",
           "queue", "open_live_rounds", "recent_answers"]


@dataclasses.dataclass(frozen=True)
class Generation:
    id: int
    project_id: int
    number: int
    model_id: int | None
    n_labels: int
    round_number: int | None
    queue_size: int
    seconds: float
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class QueueItem:
    sample_id: int
    round_number: int
    rank: int  # within its round
    score: float | None


def _gen(g: LiveGeneration) -> Generation:
    return Generation(id=g.id, project_id=g.project_id, number=g.number, model_id=g.model_id, n_labels=g.n_labels,
                      round_number=g.round_number, queue_size=g.queue_size, seconds=g.seconds,
                      created_at=g.created_at)


def latest_generation(s: Session, project_id: int) -> Generation | None:
    row = s.scalars(select(LiveGeneration).where(LiveGeneration.project_id == project_id)
                    .order_by(LiveGeneration.number.desc()).limit(1)).first()
    return None if row is None else _gen(row)


def generations(s: Session, project_id: int) -> list[Generation]:
    rows = s.scalars(select(LiveGeneration).where(LiveGeneration.project_id == project_id)
                     .order_by(LiveGeneration.number)).all()
    return [_gen(r) for r in rows]


def add_generation(s: Session, project_id: int, *, model_id: int | None, n_labels: int, round_number: int | None,
                   queue_size: int, seconds: float, ranks: list[tuple[int, float | None]]) -> Generation:
    """Record the next generation of the project and its queue order (``ranks``: (sample id, score), best
    first). Numbered after the newest; two loops writing at once collide on (project, number)."""
    top = s.scalar(select(func.max(LiveGeneration.number)).where(LiveGeneration.project_id == project_id))
    row = LiveGeneration(project_id=project_id, number=0 if top is None else int(top) + 1, model_id=model_id,
                         n_labels=int(n_labels), round_number=round_number, queue_size=int(queue_size),
                         seconds=float(seconds))
    s.add(row)
    s.flush()
    if ranks:
        s.execute(insert(LiveRank), [{"generation_id": row.id, "sample_id": int(sid), "position": i,
                                      "score": None if score is None else float(score)}
                                     for i, (sid, score) in enumerate(ranks)])
    return _gen(row)


def ranks_of(s: Session, generation_id: int) -> list[tuple[int, float | None]]:
    """(sample id, score) of a generation's queue, best first."""
    return [(int(a), b) for a, b in fetch_all(s, select(LiveRank.sample_id, LiveRank.score)
                                              .where(LiveRank.generation_id == generation_id)
                                              .order_by(LiveRank.position))]


def open_live_rounds(s: Session, dataset_id: int) -> list[int]:
    """Numbers of the dataset's open rounds (selected or pushed), ascending: the queue's rounds."""
    from curator.store.rounds import OPEN_STATUSES

    return [int(n) for n in s.scalars(select(Round.number).where(Round.dataset_id == dataset_id,
                                                                 Round.status.in_(OPEN_STATUSES))
                                      .order_by(Round.number))]


def queue(s: Session, dataset_id: int) -> list[QueueItem]:
    """Samples of the dataset's open rounds with no live (not deleted) answer, by round then rank: the
    tasks the labelers still have ahead of them (recorded rounds count even before they are pushed)."""
    from curator.store.rounds import OPEN_STATUSES

    answered = select(Annotation.sample_id).where(Annotation.deleted.is_(False))
    rows = fetch_all(s, select(RoundItem.sample_id, Round.number, RoundItem.rank, RoundItem.score)
                     .join(Round, Round.id == RoundItem.round_id)
                     .where(Round.dataset_id == dataset_id, Round.status.in_(OPEN_STATUSES),
                            RoundItem.sample_id.not_in(answered))
                     .order_by(Round.number, RoundItem.rank))
    return [QueueItem(int(a), int(b), int(c), None if d is None else float(d)) for a, b, c, d in rows]


def recent_answers(s: Session, dataset_id: int, limit: int) -> list[tuple[str | None, dt.datetime]]:
    """(annotator, created_at) of the dataset's ``limit`` newest live answers: the labelers' pace.
    Through SQLAlchemy's result types, not ``fetch_all`` (a few rows): SQLite's driver gives time
    stamps as text."""
    return [(a, t) for a, t in s.execute(select(Annotation.annotator, Annotation.created_at)
                                         .join(Sample, Sample.id == Annotation.sample_id)
                                         .where(Sample.dataset_id == dataset_id, Annotation.deleted.is_(False))
                                         .order_by(Annotation.created_at.desc()).limit(int(limit))).all()]
