"""The embeddings aggregate: embedding-set rows and the arrays on disk they name.

One set per (dataset, model): a float32 (count, dim) memory-mapped file of
L2-normalised embeddings and an int64 file of the sample ids, row for row, in
id order, under the workspace's embeddings folder (``root``). ``done`` counts
the rows written; the writer flushes a batch to disk before moving it.

``vectors_of`` is THE way to get the stored embeddings of given samples (the
rounds, dedup and FiftyOne all go through it). Functions take the caller's
session and return frozen ``EmbeddingInfo``s and arrays, never ORM rows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from curator.exceptions import NotFoundError, ValidationError
from curator.store.schema import EmbeddingSet

__all__ = ["EmbeddingInfo", "MissingSamples", "file_names", "find", "get", "newest_complete", "start",
           "set_done", "record_complete", "of_models", "open_array", "load", "vectors_of", "all_file_names"]


@dataclasses.dataclass(frozen=True)
class EmbeddingInfo:
    id: int
    dataset_id: int
    model_id: int
    dim: int
    count: int
    done: int

    @property
    def complete(self) -> bool:
        return self.done == self.count


class MissingSamples(NotFoundError):
    """The stored set lacks some of the samples asked for (added after it was computed)."""

    def __init__(self, message: str, missing: list[int]):
        super().__init__(message)
        self.missing = missing


_COLUMNS = (EmbeddingSet.id, EmbeddingSet.dataset_id, EmbeddingSet.model_id, EmbeddingSet.dim,
            EmbeddingSet.count, EmbeddingSet.done)


def file_names(dataset_id: int, model_id: int) -> tuple[str, str]:
    """(vectors file, sample-ids file) of a set, relative to the embeddings folder."""
    return f"{dataset_id}-{model_id}.f32", f"{dataset_id}-{model_id}.ids.i64"


def find(session: Session, dataset_id: int, model_id: int) -> EmbeddingInfo | None:
    row = session.execute(select(*_COLUMNS).where(EmbeddingSet.dataset_id == dataset_id,
                                                  EmbeddingSet.model_id == model_id)).first()
    return EmbeddingInfo(*map(int, row)) if row is not None else None


def get(session: Session, dataset_id: int, model_id: int) -> EmbeddingInfo:
    """``find``, or NotFoundError saying how to compute the set."""
    got = find(session, dataset_id, model_id)
    if got is None:
        raise NotFoundError(
            f"no embeddings of dataset {dataset_id} by model {model_id}; compute them with: curator embed"
        )
    return got


def newest_complete(session: Session, dataset_id: int) -> EmbeddingInfo | None:
    """The dataset's most recently created set whose rows are all written, or None."""
    row = session.execute(select(*_COLUMNS).where(EmbeddingSet.dataset_id == dataset_id,
                                                  EmbeddingSet.done == EmbeddingSet.count)
                          .order_by(EmbeddingSet.id.desc()).limit(1)).first()
    return EmbeddingInfo(*map(int, row)) if row is not None else None


def start(session: Session, dataset_id: int, model_id: int, *, dim: int, count: int) -> EmbeddingInfo:
    """Record a set about to be (re)written from row 0: ``count`` rows of ``dim`` values, none done."""
    vec_name, ids_name = file_names(dataset_id, model_id)
    values = dict(dim=int(dim), count=int(count), done=0, path=vec_name, sample_ids_path=ids_name)
    if find(session, dataset_id, model_id) is None:
        session.execute(insert(EmbeddingSet).values(dataset_id=dataset_id, model_id=model_id, **values))
    else:
        session.execute(update(EmbeddingSet).where(EmbeddingSet.dataset_id == dataset_id,
                                                   EmbeddingSet.model_id == model_id).values(**values))
    return get(session, dataset_id, model_id)


def record_complete(session: Session, dataset_id: int, model_id: int, *, dim: int, count: int) -> EmbeddingInfo:
    """Record a set whose files are already complete on disk (imported: ``curator embed --from``)."""
    start(session, dataset_id, model_id, dim=dim, count=count)
    set_done(session, dataset_id, model_id, count)
    return get(session, dataset_id, model_id)


def of_models(session: Session, dataset_id: int, model_ids) -> list[EmbeddingInfo]:
    """The dataset's sets made by any of ``model_ids``, newest first."""
    ids = [int(m) for m in model_ids]
    if not ids:
        return []
    rows = session.execute(select(*_COLUMNS).where(EmbeddingSet.dataset_id == dataset_id,
                                                   EmbeddingSet.model_id.in_(ids))
                           .order_by(EmbeddingSet.id.desc())).all()
    return [EmbeddingInfo(*map(int, r)) for r in rows]


def set_done(session: Session, dataset_id: int, model_id: int, done: int) -> None:
    """Rows ``[0, done)`` of the set are on disk (flushed before this is recorded)."""
    session.execute(update(EmbeddingSet).where(EmbeddingSet.dataset_id == dataset_id,
                                               EmbeddingSet.model_id == model_id).values(done=int(done)))


def all_file_names(session: Session) -> set[str]:
    """Names of every file an embedding set points to (``curator doctor`` keeps them)."""
    return {Path(p).name for row in session.execute(select(EmbeddingSet.path, EmbeddingSet.sample_ids_path))
            for p in row if p}


def open_array(root: Path | str, name: str, dtype, shape, mode: str) -> np.memmap:
    """A memory-mapped array file of the embeddings folder; a missing file to read is NotFoundError."""
    path = Path(root) / name
    if mode == "r" and not path.is_file():
        raise NotFoundError(f"embedding file {path} is missing; compute the embeddings again (curator embed)")
    return np.memmap(path, dtype=dtype, mode=mode, shape=shape)


def load(session: Session, root: Path | str, dataset_id: int, model_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample ids, read-only memory-mapped embeddings) of a complete set; NotFoundError when never
    computed or a file is gone, ValidationError when unfinished."""
    inf = get(session, dataset_id, model_id)
    if not inf.complete:
        raise ValidationError(
            f"embeddings of dataset {dataset_id} by model {model_id} are {inf.done}/{inf.count} done; "
            "run curator embed again to finish them"
        )
    vec_name, ids_name = file_names(dataset_id, model_id)
    ids = np.array(open_array(root, ids_name, np.int64, (inf.count,), "r"))
    return ids, open_array(root, vec_name, np.float32, (inf.count, inf.dim), "r")


def vectors_of(session: Session, root: Path | str, dataset_id: int, model_id: int, sample_ids) -> np.ndarray:
    """The stored embeddings of ``sample_ids``, row for row, as a float32 array in memory.

    Raises what ``load`` raises, and ``MissingSamples`` (a NotFoundError listing them) when the
    set lacks some of the samples; callers with a fallback (compute them now) catch
    ``(NotFoundError, ValidationError)``.
    """
    ids = np.asarray(sample_ids, dtype=np.int64).ravel()
    stored_ids, E = load(session, root, dataset_id, model_id)
    if len(ids) == 0:
        return np.zeros((0, E.shape[1]), np.float32)
    order = np.argsort(stored_ids, kind="stable")  # written in id order; sorted again to be sure
    pos = np.searchsorted(stored_ids, ids, sorter=order)
    pos = np.minimum(pos, len(stored_ids) - 1)
    rows = order[pos] if len(stored_ids) else pos
    hit = stored_ids[rows] == ids if len(stored_ids) else np.zeros(len(ids), bool)
    if not hit.all():
        missing = [int(i) for i in ids[~hit]]
        raise MissingSamples(
            f"embeddings of dataset {dataset_id} by model {model_id} lack {len(missing)} samples "
            f"(e.g. id {missing[0]}) added after they were computed; compute them again (curator embed)", missing)
    return np.asarray(E[rows], dtype=np.float32)
