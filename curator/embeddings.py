"""Embeddings of a dataset by a model: computed once, stored on disk, resumable.

One ``EmbeddingSet`` row per (dataset, model) points to two files under
``settings.embeddings_dir``: a memory-mapped float32 (count, dim) array of
L2-normalised embeddings and the int64 sample ids, row for row (samples in
id order). ``done`` counts the rows written; each batch is flushed to disk
before ``done`` moves, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from curator.exceptions import NotFoundError, ValidationError
from curator.settings import Settings
from curator.store.schema import EmbeddingSet, Model, Sample
from curator.store.queries import dataset_id as _dataset_id
from curator.store.session import transaction

__all__ = ["EmbeddingInfo", "register_model", "compute_embeddings", "load", "load_latest", "info",
           "ColdStartEmbedder", "coldstart_vectors"]


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


def _info(row: EmbeddingSet) -> EmbeddingInfo:
    return EmbeddingInfo(row.id, row.dataset_id, row.model_id, row.dim, row.count, row.done)


def register_model(session: Session, adapter, *, path: str | None = None, params: dict | None = None) -> int:
    """The id of the ``Model`` row of ``adapter`` (name, version), created if new."""
    from curator.models.base import checksum_of

    name, version = adapter.name, adapter.version
    row = session.scalar(select(Model).where(Model.name == name, Model.version == version))
    if row is None:
        module = getattr(adapter, "module", None)
        checksum = checksum_of(module) if module is not None else version.ljust(64, "0")[:64]
        row = Model(name=name, version=version, checksum=checksum, path=str(path) if path else None, params=params)
        session.add(row)
        session.flush()
    elif path and not row.path:
        row.path = str(path)
    return row.id


def _files(settings: Settings, ds: int, model_id: int) -> tuple[str, str]:
    return f"{ds}-{model_id}.f32", f"{ds}-{model_id}.ids.i64"


def _open(settings: Settings, name: str, dtype, shape, mode: str) -> np.memmap:
    path = Path(settings.embeddings_dir) / name
    if mode == "r" and not path.is_file():
        raise NotFoundError(f"embedding file {path} is missing; compute the embeddings again (curator embed)")
    return np.memmap(path, dtype=dtype, mode=mode, shape=shape)


def compute_embeddings(settings: Settings, dataset: str, model, *, model_id: int | None = None,
                       batch_size: int = 1024) -> EmbeddingInfo:
    """Embed every sample of ``dataset`` with ``model`` (a model adapter), resuming if interrupted.

    Runs once per (dataset, model): a complete set is returned as it is. If
    samples were added since, the set is recomputed from the start.
    """
    from curator.images import load_images

    with transaction(settings) as s:
        ds = _dataset_id(s, dataset)
        if model_id is None:
            model_id = register_model(s, model)
        ids = np.array(s.scalars(select(Sample.id).where(Sample.dataset_id == ds).order_by(Sample.id)).all(),
                       dtype=np.int64)
        row = s.scalar(select(EmbeddingSet).where(EmbeddingSet.dataset_id == ds,
                                                  EmbeddingSet.model_id == model_id))
        if len(ids) == 0:
            raise ValidationError(f"dataset {dataset!r} has no samples; ingest some first")
        existing = _info(row) if row is not None else None
    if existing is not None and existing.count == len(ids):
        stored = _open(settings, _files(settings, ds, model_id)[1], np.int64, (existing.count,), "r")
        if np.array_equal(stored, ids):
            if existing.complete:
                return existing
            start, dim = existing.done, existing.dim
        else:
            existing = None
    if existing is None or existing.count != len(ids):
        start = 0
        uris = _uris(settings, ids[:1])
        dim = int(model.embed(load_images(uris)).shape[1])
    vec_name, ids_name = _files(settings, ds, model_id)
    Path(settings.embeddings_dir).mkdir(parents=True, exist_ok=True)
    if start == 0:
        out_ids = _open(settings, ids_name, np.int64, (len(ids),), "w+")
        out_ids[:] = ids
        out_ids.flush()
        _open(settings, vec_name, np.float32, (len(ids), dim), "w+").flush()
        with transaction(settings) as s:
            row = s.scalar(select(EmbeddingSet).where(EmbeddingSet.dataset_id == ds,
                                                      EmbeddingSet.model_id == model_id))
            if row is None:
                row = EmbeddingSet(dataset_id=ds, model_id=model_id, dim=dim, count=len(ids), done=0,
                                   path=vec_name, sample_ids_path=ids_name)
                s.add(row)
            else:
                row.dim, row.count, row.done = dim, len(ids), 0
                row.path, row.sample_ids_path = vec_name, ids_name
    vecs = _open(settings, vec_name, np.float32, (len(ids), dim), "r+")
    for s0 in range(start, len(ids), batch_size):
        chunk = ids[s0: s0 + batch_size]
        E = model.embed(load_images(_uris(settings, chunk)))
        if E.shape[1] != dim:
            raise ValidationError(f"model {model.name} gave {E.shape[1]}-d embeddings, expected {dim}")
        norms = np.linalg.norm(E, axis=1, keepdims=True)
        vecs[s0: s0 + len(chunk)] = E / np.maximum(norms, 1e-12)
        vecs.flush()
        with transaction(settings) as s:
            row = s.scalar(select(EmbeddingSet).where(EmbeddingSet.dataset_id == ds,
                                                      EmbeddingSet.model_id == model_id))
            row.done = s0 + len(chunk)
    del vecs
    with transaction(settings) as s:
        return info(s, ds, model_id)


def _uris(settings: Settings, ids: np.ndarray) -> list[str]:
    with transaction(settings) as s:
        rows = dict(s.execute(select(Sample.id, Sample.uri).where(Sample.id.in_(ids.tolist()))).all())
    return [rows[int(i)] for i in ids]


def info(session: Session, dataset_id: int, model_id: int) -> EmbeddingInfo:
    row = session.scalar(select(EmbeddingSet).where(EmbeddingSet.dataset_id == dataset_id,
                                                    EmbeddingSet.model_id == model_id))
    if row is None:
        raise NotFoundError(
            f"no embeddings of dataset {dataset_id} by model {model_id}; compute them with: curator embed"
        )
    return _info(row)


def load(session: Session, settings: Settings, dataset_id: int, model_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample_ids, read-only memory-mapped embeddings) of a complete embedding set."""
    inf = info(session, dataset_id, model_id)
    if not inf.complete:
        raise ValidationError(
            f"embeddings of dataset {dataset_id} by model {model_id} are {inf.done}/{inf.count} done; "
            "run curator embed again to finish them"
        )
    vec_name, ids_name = _files(settings, dataset_id, model_id)
    ids = np.array(_open(settings, ids_name, np.int64, (inf.count,), "r"))
    return ids, _open(settings, vec_name, np.float32, (inf.count, inf.dim), "r")


def load_latest(session: Session, settings: Settings, dataset_id: int):
    """(sample_ids, embeddings) of the newest complete set of a dataset, or None."""
    rows = session.scalars(select(EmbeddingSet).where(EmbeddingSet.dataset_id == dataset_id)
                           .order_by(EmbeddingSet.id.desc())).all()
    for row in rows:
        if row.done == row.count:
            return load(session, settings, dataset_id, row.model_id)
    return None


class ColdStartEmbedder:
    """``curator.coldstart`` as a model adapter, so its vectors can go to the store once
    per dataset (``curator fiftyone sync`` stores them; dedup and rounds then read them)."""

    def __init__(self):
        from curator import coldstart

        self.name = coldstart.MODEL_NAME
        self.version = f"thumb{coldstart.THUMB_SIDE}"

    def embed(self, images) -> np.ndarray:
        from curator import coldstart

        return coldstart.embed_images(images)


def coldstart_vectors(settings: Settings, dataset_id: int, ids) -> np.ndarray:
    """Cold-start vectors of samples ``ids``: read from the stored set when it holds them all,
    else computed from the images now (the same numbers: a fixed function of each file)."""
    from curator import coldstart

    ids = np.asarray(ids, dtype=np.int64)
    cold = ColdStartEmbedder()
    with transaction(settings) as s:
        model_id = s.scalar(select(Model.id).where(Model.name == cold.name, Model.version == cold.version))
        if model_id is not None and len(ids):
            try:
                stored_ids, E = load(s, settings, dataset_id, model_id)
            except (NotFoundError, ValidationError):  # never computed, or unfinished
                stored_ids = None
            if stored_ids is not None and len(stored_ids):
                pos = np.minimum(np.searchsorted(stored_ids, ids), len(stored_ids) - 1)  # stored in id order
                if np.array_equal(stored_ids[pos], ids):
                    return np.asarray(E[pos], dtype=np.float32)
        uri = dict(s.execute(select(Sample.id, Sample.uri).where(Sample.dataset_id == dataset_id)).all())
    return coldstart.embed_paths([uri[int(i)] for i in ids])
