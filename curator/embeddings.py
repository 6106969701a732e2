"""Embeddings of a dataset by a model: computed once, stored on disk, resumable.

One ``EmbeddingSet`` row per (dataset, model) points to two files under
``settings.embeddings_dir``: a memory-mapped float32 (count, dim) array of
L2-normalised embeddings and the int64 sample ids, row for row (samples in
id order). ``done`` counts the rows written; each batch is flushed to disk
before ``done`` moves, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from curator import images
from curator.exceptions import NotFoundError, ValidationError
from curator.settings import Settings
from curator.steps import run_step
from curator.store import embeddings as store_emb
from curator.store import models as store_models
from curator.store import samples as store_samples
from curator.store.embeddings import EmbeddingInfo
from curator.store.queries import dataset_id as _dataset_id

__all__ = ["EmbeddingInfo", "model_identity", "register_model", "compute_embeddings", "load", "load_latest", "info",
           "ColdStartEmbedder", "coldstart_vectors", "stored_or_uris", "coldstart_read", "coldstart_compute"]


def model_identity(adapter) -> tuple[str, str, str]:
    """(name, version, checksum) of a model adapter: computed from its weights, no database."""
    from curator.models.base import checksum_of

    name, version = adapter.name, adapter.version
    module = getattr(adapter, "module", None)
    checksum = checksum_of(module) if module is not None else version.ljust(64, "0")[:64]
    return name, version, checksum


def register_model(session: Session, adapter, *, path: str | None = None, params: dict | None = None,
                   identity: tuple[str, str, str] | None = None) -> int:
    """The id of the model of ``adapter`` (name, version), registered if new (``curator.store.models``).
    Pass ``identity`` (``model_identity(adapter)``, computed outside the transaction) to keep the
    checksum of the weights out of it."""
    name, version, checksum = identity or model_identity(adapter)
    return store_models.register(session, name, version, checksum=checksum, path=path, params=params).id


def compute_embeddings(settings: Settings, dataset: str, model, *, model_id: int | None = None,
                       batch_size: int = 1024) -> EmbeddingInfo:
    """Embed every sample of ``dataset`` with ``model`` (a model adapter), resuming if interrupted.

    Runs once per (dataset, model): a complete set is returned as it is. If
    samples were added since, the set is recomputed from the start. Each batch is
    one step: read its URIs, embed them and write them to the array on disk, then
    record the rows done. Every batch is decoded to one frame (``decode_for``): the
    model's declared input, the rest from the dataset's first sample.
    """
    root = Path(settings.embeddings_dir)
    identity = model_identity(model) if model_id is None else None

    def read(s):
        ds = _dataset_id(s, dataset)
        mid = model_id if model_id is not None else register_model(s, model, identity=identity)
        return ds, mid, store_samples.ids(s, ds), store_emb.find(s, ds, mid)

    ds, model_id, ids, existing = run_step(settings, write=lambda s, _: read(s))  # may register the model
    if len(ids) == 0:
        raise ValidationError(f"dataset {dataset!r} has no samples; ingest some first")
    vec_name, ids_name = store_emb.file_names(ds, model_id)
    start, dim = 0, None
    if existing is not None and existing.count == len(ids):
        stored = store_emb.open_array(root, ids_name, np.int64, (existing.count,), "r")
        if np.array_equal(stored, ids):
            if existing.complete:
                return existing
            start, dim = existing.done, existing.dim
    first = run_step(settings, lambda s: store_samples.uris(s, ids[:1]))
    frame = None if getattr(model, "any_size", False) else images.frame(first, model)
    if start == 0:
        dim = int(model.embed(decode_for(first, frame, model)).shape[1])
        root.mkdir(parents=True, exist_ok=True)
        out_ids = store_emb.open_array(root, ids_name, np.int64, (len(ids),), "w+")
        out_ids[:] = ids
        out_ids.flush()
        store_emb.open_array(root, vec_name, np.float32, (len(ids), dim), "w+").flush()
        run_step(settings, write=lambda s, _: store_emb.start(s, ds, model_id, dim=dim, count=len(ids)))
    vecs = store_emb.open_array(root, vec_name, np.float32, (len(ids), dim), "r+")

    def embed_batch(s0: int):
        chunk = ids[s0: s0 + batch_size]

        def compute(uris):
            E = model.embed(decode_for(uris, frame, model))
            if E.shape[1] != dim:
                raise ValidationError(f"model {model.name} gave {E.shape[1]}-d embeddings, expected {dim}")
            norms = np.linalg.norm(E, axis=1, keepdims=True)
            vecs[s0: s0 + len(chunk)] = E / np.maximum(norms, 1e-12)
            vecs.flush()  # on disk before ``done`` moves
            return s0 + len(chunk)

        run_step(settings, lambda s: store_samples.uris(s, chunk), compute,
                 lambda s, done: store_emb.set_done(s, ds, model_id, done))

    for s0 in range(start, len(ids), batch_size):
        embed_batch(s0)
    del vecs
    return run_step(settings, lambda s: store_emb.get(s, ds, model_id))


def decode_for(uris, frame, model=None):
    """COMPUTE: the images of ``uris`` as ``model`` takes them: one uint8 batch in ``frame``
    ((mode, size, resize) from ``images.frame``), or, for a model that takes any size
    (``any_size``: the cold-start embedder), a list of images at their own size."""
    if frame is None:
        return [images.decode(u) for u in uris]
    mode, size, resize = frame
    return images.load_images(list(uris), mode=mode, size=size, spec=getattr(model, "input_spec", None))


def info(session: Session, dataset_id: int, model_id: int) -> EmbeddingInfo:
    return store_emb.get(session, dataset_id, model_id)


def load(session: Session, settings: Settings, dataset_id: int, model_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample_ids, read-only memory-mapped embeddings) of a complete embedding set."""
    return store_emb.load(session, settings.embeddings_dir, dataset_id, model_id)


def load_latest(session: Session, settings: Settings, dataset_id: int):
    """(sample_ids, embeddings) of the newest complete set of a dataset, or None."""
    newest = store_emb.newest_complete(session, dataset_id)
    return load(session, settings, dataset_id, newest.model_id) if newest is not None else None


class ColdStartEmbedder:
    """``curator.coldstart`` as a model adapter, so its vectors can go to the store once
    per dataset (``curator fiftyone sync`` stores them; dedup and rounds then read them).
    It takes images at their own size (``any_size``), as ``coldstart.embed_paths`` does."""

    any_size = True

    def __init__(self):
        from curator import coldstart

        self.name = coldstart.MODEL_NAME
        self.version = coldstart.VERSION

    def embed(self, images) -> np.ndarray:
        from curator import coldstart

        return coldstart.embed_images(images)


def stored_or_uris(session: Session, settings: Settings, dataset_id: int, model_id: int | None, ids):
    """READ: (stored vectors of ``ids`` by ``model_id``, None) when the store holds them all, else
    (None, their URIs) for a compute step to embed (``store.embeddings.vectors_of`` does the matching)."""
    ids = np.asarray(ids, dtype=np.int64)
    if model_id is not None and len(ids):
        try:
            return store_emb.vectors_of(session, settings.embeddings_dir, dataset_id, model_id, ids), None
        except (NotFoundError, ValidationError):  # never computed, unfinished, or lacking some
            pass
    return None, store_samples.uris(session, ids)


def coldstart_read(session: Session, settings: Settings, dataset_id: int, ids):
    """READ: ``stored_or_uris`` of the cold-start embedding."""
    cold = ColdStartEmbedder()
    model = store_models.by_version(session, cold.name, cold.version)
    return stored_or_uris(session, settings, dataset_id, model.id if model else None, ids)


def coldstart_compute(stored_or_uris_) -> np.ndarray:
    """COMPUTE: cold-start vectors, as stored or from the images (the same numbers: a fixed
    function of each file)."""
    from curator import coldstart

    stored, uris = stored_or_uris_
    return stored if stored is not None else coldstart.embed_paths(uris)


def coldstart_vectors(settings: Settings, dataset_id: int, ids) -> np.ndarray:
    """Cold-start vectors of samples ``ids``: read from the stored set when it holds them all,
    else computed from the images now."""
    return run_step(settings, lambda s: coldstart_read(s, settings, dataset_id, ids), coldstart_compute)
