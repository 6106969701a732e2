"""The rounds aggregate: a selection round and its ranked samples, read and written here only.

A round is found by its number within a dataset, the number ``curator select``
prints and every command takes; the primary key stays inside the store. Every
function takes the caller's session (the caller owns the transaction) and
returns a frozen ``RoundInfo`` or numpy arrays, never an ORM row, so nothing
outside the store can change a round behind the store's back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from curator.exceptions import NotFoundError, ValidationError
from curator.store.schema import Dataset, Evaluation, OpenRoundSample, Round, RoundItem, utcnow

__all__ = [
    "OPEN_STATUSES", "STATUSES", "RoundInfo", "Items", "SamplesTaken", "get", "find", "latest", "list_rounds",
    "numbers", "next_number", "items", "sample_ids", "all_items", "set_status", "open_sample_ids", "sample_ids_after",
    "lock", "in_open_rounds", "create", "is_taken", "EvalPoint", "evaluations", "evaluation", "add_evaluation",
]

#: Rounds whose selected samples are still waiting for labels (migration 0005 keeps one open round per sample).
OPEN_STATUSES = ("pending", "selected", "pushed")
STATUSES = ("pending", "selected", "pushed", "labeled", "versioned", "done", "failed")
_CHUNK = 5000


@dataclasses.dataclass(frozen=True)
class RoundInfo:
    """A round as read: ``id`` is the store's key (task links and evaluations point at it), ``number`` its name."""

    id: int
    dataset_id: int
    number: int
    policy: str
    params: dict[str, Any] | None
    budget: int
    seed: int  # the user's seed, as given; derived streams come from curator.seeds
    model_id: int | None
    status: str
    created_at: dt.datetime | None
    finished_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class Items:
    """A round's ranked samples as arrays, rank 0 first; ``score`` is NaN where none was recorded."""

    rank: np.ndarray  # (n,) int64
    sample_id: np.ndarray  # (n,) int64
    score: np.ndarray  # (n,) float64

    def __len__(self) -> int:
        return len(self.sample_id)


class SamplesTaken(Exception):
    """``create`` found some of its samples in an open round (or the number taken): select again.

    Raised inside the caller's transaction so that it rolls back; not a CuratorError because it
    never reaches a user (``curator.rounds`` retries, then raises StaleSelectionError).
    """


def _info(r: Round) -> RoundInfo:
    return RoundInfo(id=r.id, dataset_id=r.dataset_id, number=r.number, policy=r.policy,
                     params=dict(r.params) if r.params is not None else None, budget=r.budget, seed=r.seed,
                     model_id=r.model_id, status=r.status, created_at=r.created_at, finished_at=r.finished_at)


def _row(session: Session, dataset_id: int, number: int) -> Round | None:
    return session.scalar(select(Round).where(Round.dataset_id == dataset_id, Round.number == int(number)))


def numbers(session: Session, dataset_id: int) -> list[int]:
    """The round numbers of a dataset, ascending."""
    return [int(n) for n in session.scalars(
        select(Round.number).where(Round.dataset_id == dataset_id).order_by(Round.number))]


def find(session: Session, dataset_id: int, number: int) -> RoundInfo | None:
    """Round ``number`` of the dataset, or None."""
    r = _row(session, dataset_id, number)
    return _info(r) if r is not None else None


def get(session: Session, dataset_id: int, number: int) -> RoundInfo:
    """Round ``number`` of the dataset, or NotFoundError naming the dataset, the number and the known numbers."""
    r = _row(session, dataset_id, number)
    if r is None:
        name = session.scalar(select(Dataset.name).where(Dataset.id == dataset_id))
        known = numbers(session, dataset_id)
        raise NotFoundError(
            f"round {number} of dataset {name!r} does not exist (rounds: {', '.join(map(str, known)) or 'none yet'}); "
            f"select one first: curator select --dataset {name}"
        )
    return _info(r)


def latest(session: Session, dataset_id: int) -> RoundInfo | None:
    """The dataset's round with the highest number, or None before the first selection."""
    r = session.scalar(select(Round).where(Round.dataset_id == dataset_id).order_by(Round.number.desc()).limit(1))
    return _info(r) if r is not None else None


def list_rounds(session: Session, dataset_id: int) -> list[RoundInfo]:
    """Every round of the dataset, by number."""
    return [_info(r) for r in session.scalars(
        select(Round).where(Round.dataset_id == dataset_id).order_by(Round.number))]


def items(session: Session, round: RoundInfo) -> Items:
    """The round's ranked samples (rank, sample id, score), rank 0 first."""
    rows = session.execute(select(RoundItem.rank, RoundItem.sample_id, RoundItem.score)
                           .where(RoundItem.round_id == round.id).order_by(RoundItem.rank)).all()
    return Items(rank=np.array([r[0] for r in rows], dtype=np.int64),
                 sample_id=np.array([r[1] for r in rows], dtype=np.int64),
                 score=np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64))


def sample_ids(session: Session, round: RoundInfo) -> np.ndarray:
    """The round's sample ids in rank order."""
    return items(session, round).sample_id


def all_items(session: Session, dataset_id: int) -> tuple[np.ndarray, Items]:
    """(round number of each item, the items) of every round of the dataset, by number then rank."""
    rows = session.execute(
        select(Round.number, RoundItem.rank, RoundItem.sample_id, RoundItem.score)
        .join(Round, Round.id == RoundItem.round_id)
        .where(Round.dataset_id == dataset_id)
        .order_by(Round.number, RoundItem.rank)
    ).all()
    return (np.array([r[0] for r in rows], dtype=np.int64),
            Items(rank=np.array([r[1] for r in rows], dtype=np.int64),
                  sample_id=np.array([r[2] for r in rows], dtype=np.int64),
                  score=np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=np.float64)))


def set_status(session: Session, dataset_id: int, number: int, status: str, *,
               only_from: tuple[str, ...] | None = None) -> RoundInfo:
    """Move round ``number`` to ``status`` (``done`` also stamps ``finished_at``); with ``only_from``, only
    a round whose status is one of those moves (a push never moves a labeled round back to pushed).

    The open-round triggers of migration 0005 free or take back the round's samples as its status
    leaves or enters the open set.
    """
    if status not in STATUSES:
        raise ValidationError(f"round status must be one of {', '.join(STATUSES)}; got {status!r}")
    r = _row(session, dataset_id, number)
    if r is None:
        get(session, dataset_id, number)  # raises, naming the known numbers
    if only_from is None or r.status in only_from:
        r.status = status
        if status == "done":
            r.finished_at = utcnow()
        session.flush()
    return _info(r)


def open_sample_ids(session: Session, dataset_id: int) -> np.ndarray:
    """Samples of the dataset waiting for labels in an open round, ascending."""
    ids = session.scalars(
        select(RoundItem.sample_id).join(Round, Round.id == RoundItem.round_id)
        .where(Round.dataset_id == dataset_id, Round.status.in_(OPEN_STATUSES)))
    return np.unique(np.fromiter(ids, dtype=np.int64))


def sample_ids_after(session: Session, dataset_id: int, number: int) -> np.ndarray:
    """Samples selected in rounds numbered above ``number`` (labels "as of round N" leave them out)."""
    ids = session.scalars(select(RoundItem.sample_id).join(Round, Round.id == RoundItem.round_id)
                          .where(Round.dataset_id == dataset_id, Round.number > int(number)))
    return np.unique(np.fromiter(ids, dtype=np.int64))


def next_number(session: Session, dataset_id: int) -> int:
    """The number the dataset's next selected round gets (1 after the seed round 0, or when there is none)."""
    top = session.scalar(select(func.max(Round.number)).where(Round.dataset_id == dataset_id))
    return (int(top) if top is not None else 0) + 1


def lock(session: Session, dataset_id: int) -> None:
    """Serialise the writers of the dataset's rounds until this transaction ends.

    PostgreSQL: a row lock on the dataset. SQLite: a first statement that
    writes takes the database's write lock at once (waiting up to the busy
    timeout), so nothing read afterwards in this transaction can be stale and
    no read lock has to be upgraded later (that fails at once with
    "database is locked"). Either way the next round number and the open
    samples read after it are current.
    """
    table = Dataset.__table__
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(table.c.id).where(table.c.id == dataset_id).with_for_update())
    else:
        session.execute(table.update().where(table.c.id == dataset_id).values(name=table.c.name))


def in_open_rounds(session: Session, ids) -> list[int]:
    """Those of ``ids`` that an open round (of any dataset) holds."""
    ids = [int(i) for i in ids]
    out: list[int] = []
    for s0 in range(0, len(ids), _CHUNK):
        out += session.scalars(select(OpenRoundSample.sample_id)
                               .where(OpenRoundSample.sample_id.in_(ids[s0: s0 + _CHUNK]))).all()
    return out


def create(session: Session, dataset_id: int, chosen, scores, *, policy: str, params: dict | None, budget: int,
           seed: int, model_id: int | None, number: int | None = None, status: str = "selected") -> RoundInfo:
    """Record a round of the ranked ``chosen`` sample ids (rank 0 first) with their ``scores`` (NaN: none).

    Takes the dataset's rounds lock first, then refuses (``SamplesTaken``) when an open round already
    holds one of ``chosen`` or when ``number`` (default: the next one) is taken: the caller's selection
    is stale and its transaction rolls back. ``open_round_samples`` (migration 0005) refuses a sample
    in two open rounds whoever writes; the check under the lock only turns that refusal into a clean
    retry. ``seed`` is the user's seed, stored as given.
    """
    chosen = [int(i) for i in chosen]
    scores = np.asarray(scores, dtype=np.float64) if len(chosen) else np.zeros(0)
    if len(scores) != len(chosen):
        raise ValidationError(f"a round needs one score per sample: {len(chosen)} samples, {len(scores)} scores")
    lock(session, dataset_id)
    if in_open_rounds(session, chosen):
        raise SamplesTaken("some samples are in an open round")
    if number is None:
        number = next_number(session, dataset_id)
    elif _row(session, dataset_id, number) is not None:
        raise SamplesTaken(f"round {number} exists")
    rnd = Round(dataset_id=dataset_id, number=int(number), policy=policy, params=params, budget=budget,
                seed=int(seed), model_id=model_id, status=status)
    session.add(rnd)
    session.flush()
    session.add_all([RoundItem(round_id=rnd.id, sample_id=sid, rank=r,
                               score=None if not np.isfinite(v) else float(v))
                     for r, (sid, v) in enumerate(zip(chosen, scores))])
    session.flush()
    return _info(rnd)


def is_taken(exc: IntegrityError) -> bool:
    """An IntegrityError of ``create`` that means a writer that skipped the lock (a script, an older
    curator) took a sample or the round number first: the selection is stale, not broken."""
    text = str(exc.orig).lower()
    return "open round" in text or "open_round_samples" in text or "number" in text


# -- evaluations: the learning curve, one point per (round, metric) ----------------------------

@dataclasses.dataclass(frozen=True)
class EvalPoint:
    """A recorded evaluation: ``number`` is its round's number (None for points of an older curator)."""

    id: int
    round_id: int | None
    number: int | None
    model_id: int | None
    n_labels: int
    metric: str
    value: float


def evaluations(session: Session, dataset_id: int, metric: str | None = None) -> list[EvalPoint]:
    """The dataset's evaluations (of ``metric``), by round number (points without a round last),
    then label count, then when recorded."""
    q = (select(Evaluation.id, Evaluation.round_id, Round.number, Evaluation.model_id, Evaluation.n_labels,
                Evaluation.metric, Evaluation.value)
         .outerjoin(Round, Round.id == Evaluation.round_id).where(Evaluation.dataset_id == dataset_id))
    if metric is not None:
        q = q.where(Evaluation.metric == metric)
    rows = session.execute(q.order_by(Round.number.is_(None), Round.number, Evaluation.n_labels, Evaluation.id))
    return [EvalPoint(id=int(r[0]), round_id=r[1], number=r[2], model_id=r[3], n_labels=int(r[4]), metric=r[5],
                      value=float(r[6])) for r in rows]


def evaluation(session: Session, round_id: int, metric: str) -> EvalPoint | None:
    """The first point of ``metric`` recorded under the round, or None."""
    row = session.execute(
        select(Evaluation.id, Evaluation.round_id, Round.number, Evaluation.model_id, Evaluation.n_labels,
               Evaluation.metric, Evaluation.value).join(Round, Round.id == Evaluation.round_id)
        .where(Evaluation.round_id == round_id, Evaluation.metric == metric).order_by(Evaluation.id)).first()
    return EvalPoint(int(row[0]), row[1], row[2], row[3], int(row[4]), row[5], float(row[6])) if row else None


def add_evaluation(session: Session, dataset_id: int, round_id: int, *, model_id: int | None, n_labels: int,
                   metric: str, value: float) -> bool:
    """Record a point of ``metric`` under the round unless one is there already; whether it was added."""
    if evaluation(session, round_id, metric) is not None:
        return False
    session.execute(insert(Evaluation).values(dataset_id=dataset_id, round_id=round_id, model_id=model_id,
                                              n_labels=int(n_labels), metric=metric, value=float(value)))
    return True
