"""Embeddings of a dataset by a model: computed once, stored on disk, resumable.

One ``EmbeddingSet`` row per (dataset, model) points to two files under
``settings.embeddings_dir``: a memory-mapped float32 (count, dim) array of
L2-normalised embeddings and the int64 sample ids, row for row (samples in
id order). ``done`` counts the rows written; each batch is flushed to disk
before ``done`` moves, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from curator import images
from curator.exceptions import MissingExtraError, NotFoundError, ValidationError
from curator.settings import Settings
from curator.steps import run_step
from curator.store import embeddings as store_emb
from curator.store import models as store_models
from curator.store import samples as store_samples
from curator.store.embeddings import EmbeddingInfo
from curator.store.queries import dataset_id as _dataset_id

__all__ = ["EmbeddingInfo", "model_identity", "register_model", "compute_embeddings", "load", "load_latest", "info",
           "ColdStartEmbedder", "coldstart_vectors", "stored_or_uris", "coldstart_read", "coldstart_compute",
           "resolve_trained", "file_sha256", "PRECOMPUTED", "import_embeddings", "import_predictions",
           "stored_set"]


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
    vec_path = root / vec_name

    def embed_batch(s0: int):
        chunk = ids[s0: s0 + batch_size]

        def compute(uris):
            E = model.embed(decode_for(uris, frame, model))
            if E.shape[1] != dim:
                raise ValidationError(f"model {model.name} gave {E.shape[1]}-d embeddings, expected {dim}")
            norms = np.linalg.norm(E, axis=1, keepdims=True)
            write_rows(vec_path, s0, E / np.maximum(norms, 1e-12), dim)  # on disk before ``done`` moves
            return s0 + len(chunk)

        run_step(settings, lambda s: store_samples.uris(s, chunk), compute,
                 lambda s, done: store_emb.set_done(s, ds, model_id, done))

    for s0 in range(start, len(ids), batch_size):
        embed_batch(s0)
    return run_step(settings, lambda s: store_emb.get(s, ds, model_id))


def write_rows(path: Path, first: int, rows: np.ndarray, dim: int) -> None:
    """COMPUTE: write float32 ``rows`` at row ``first`` of the (n, dim) array file ``path`` and fsync.

    A positioned write, not a memory map held for the whole set: a map's written pages stay in the
    process's resident set until it is closed, so the peak RSS of embedding n samples grew by n x dim
    x 4 bytes (150 MiB at 100,000 x 384); written this way it is one batch (benchmarks/own_data)."""
    data = np.ascontiguousarray(rows, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] != dim:
        raise ValidationError(f"embedding rows of shape {data.shape} do not fit the {dim}-d set in {path}")
    fd = os.open(path, os.O_WRONLY)
    try:
        view, offset = memoryview(data).cast("B"), first * dim * 4
        while view:
            wrote = os.pwrite(fd, view, offset)
            view, offset = view[wrote:], offset + wrote
        os.fsync(fd)
    finally:
        os.close(fd)


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


# -- models named by a spec ------------------------------------------------------------------


def file_sha256(path) -> str | None:
    """The sha256 of a weights or model file (recorded with the model), or None without one."""
    import hashlib

    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _spec_of_row(row):
    """The ModelSpec a stored model row records; its weights file for a row from before specs."""
    from curator.models.spec import ModelSpec, spec_from_record

    params = row.params or {}
    if params.get("kind") == "precomputed":
        raise ValidationError(f"model {row.id} ({row.name}) is imported embeddings or predictions "
                              "(curator embed/score --from), not a model that predicts; pass --embeddings "
                              f"{row.name} to use its embeddings, or give a model spec")
    if isinstance(params.get("spec"), dict):
        return spec_from_record(params["spec"])
    if not row.path:
        raise NotFoundError(f"model {row.id} has no weights file recorded; pass the .pt file instead")
    return ModelSpec.parse(row.path)


def resolve_trained(settings: Settings, model, *, weights=None, dataset: str | None = None):
    """(model id, adapter, classes, weights path, ModelSpec) of ``model``: a model id, a model spec
    (``curator.models.resolve_model``), a ModelSpec, or a recorded model name or path.

    Read: the dataset's classes and the named row. Compute (no session): build the adapter from the
    spec, giving a model that declares no classes the dataset's (a model whose output width differs
    is refused at its first prediction). Write: register the model with its spec and the sha256 of
    its weights file, so a later ``--model <id>`` builds the same model and refuses one whose file
    changed since.
    """
    from curator.models.spec import ModelSpec, looks_like_spec, spec_record

    is_id = isinstance(model, (int, np.integer)) or (isinstance(model, str) and model.strip().isdigit())
    text = model.strip() if isinstance(model, str) else None

    def read(s):
        classes = store_samples.classes(s, _dataset_id(s, dataset)) if dataset else []
        row = None
        if is_id:
            row = store_models.get(s, int(model))
        elif text and weights is None and not Path(text).expanduser().exists() and not looks_like_spec(text):
            row = store_models.find(s, text)  # a recorded name or weights path (None: parsed as a spec below)
        return classes, row

    def compute(got):
        classes, row = got
        if row is not None and weights is not None:
            raise ValidationError(f"--weights goes with a model spec, not with model {row.id} (which has its own); "
                                  "drop --weights, or give the spec with the new weights")
        spec = _spec_of_row(row) if row is not None else ModelSpec.parse(model, weights=weights)
        if spec.kind in ("factory", "registered", "builtin") and classes and "classes" not in spec.options:
            spec = ModelSpec.parse(spec, classes=classes)
        adapter = spec.load()
        if getattr(adapter, "classes", None) is None and classes:
            adapter.classes = list(classes)
            spec = ModelSpec.parse(spec, classes=classes)
        name, version, checksum = model_identity(adapter)
        if row is not None and (row.name, row.version) != (name, version):
            raise ValidationError(f"model {row.id} ({row.name}) no longer matches its recorded weights (version "
                                  f"{row.version}, now {version}): its file changed since; give the spec "
                                  "again to record the new weights as a new model")
        path = spec.target if spec.kind in ("file", "torchscript") else spec.weights
        params = {"spec": spec_record(spec), "weights_sha256": file_sha256(path)}
        return adapter, spec, path, (name, version, checksum), params

    def write(s, result):
        adapter, spec, path, (name, version, checksum), params = result
        row = store_models.register(s, name, version, checksum=checksum, path=path, params=params)
        classes = [str(c) for c in adapter.classes] if getattr(adapter, "classes", None) is not None else []
        return row.id, adapter, classes, row.path or path, spec

    return run_step(settings, read, compute, write)


# -- precomputed embeddings and predictions ---------------------------------------------------

#: ``params["kind"]`` of the model row that stands for imported outputs (no model to run).
PRECOMPUTED = "precomputed"


def _import_name(name: str | None, source: str) -> str:
    if name is None:
        name = source.rpartition(".")[2] if source.startswith("fiftyone:") else Path(source).stem
    name = str(name).strip()
    if not name or len(name) > 200 or name.isdigit():
        raise ValidationError(f"--name {name!r}: give a name of 1 to 200 characters that is not a number "
                              "(numbers are model ids)")
    return name


def _precomputed_row(s: Session, name: str, version: str, checksum: str, params: dict):
    """The model row standing for imported outputs ``name``; a name a real model has is refused."""
    newest = store_models.newest_named(s, name)
    if newest is not None and (newest.params or {}).get("kind") != PRECOMPUTED:
        raise ValidationError(f"--name {name!r} is the name of model {newest.id}; choose another --name for the "
                              "imported outputs")
    return store_models.register(s, name, version, checksum=checksum, params=params)


def _content_hash(*arrays) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _read_source(source, what: str, ids):
    """(keys, checked array) of a ``--from`` source: files by ``curator.precomputed``, a FiftyOne field here."""
    from curator import precomputed

    if not str(source).startswith("fiftyone:"):
        return precomputed.read(source, what, ids=ids)
    if what != "embeddings" or ids is not None:
        raise ValidationError(f"--from {source}: a FiftyOne field gives embeddings (curator embed --from), "
                              "matched by file path; drop --ids")
    keys, X = _read_fiftyone(str(source))
    return keys, precomputed.check_array(X, str(source), what, len(keys))


def _read_fiftyone(source: str):
    spec = source[len("fiftyone:"):]
    name, dot, field = spec.rpartition(".")
    if not dot or not name or not field:
        raise ValidationError(f"--from {source}: write fiftyone:DATASET.FIELD (e.g. fiftyone:photos.clip_embedding)")
    try:
        import fiftyone as fo
    except ImportError:
        raise MissingExtraError("fiftyone", "fiftyone") from None
    if not fo.dataset_exists(name):
        raise ValidationError(f"--from {source}: FiftyOne has no dataset {name!r}; known: "
                              f"{', '.join(fo.list_datasets()[:10]) or 'none'}")
    ds = fo.load_dataset(name)
    if not ds.has_sample_field(field):
        raise ValidationError(f"--from {source}: FiftyOne dataset {name!r} has no field {field!r}")
    values = ds.values(field)
    if any(v is None for v in values):
        missing = sum(v is None for v in values)
        raise ValidationError(f"--from {source}: {missing} samples have no {field!r}; compute it for every sample")
    try:
        X = np.array([np.asarray(v, dtype=np.float64).ravel() for v in values])
    except (TypeError, ValueError):
        raise ValidationError(f"--from {source}: field {field!r} is not a numeric vector per sample") from None
    return [str(p) for p in ds.values("filepath")], X



def import_embeddings(settings: Settings, dataset: str, source: str, *, name: str | None = None,
                      ids=None) -> EmbeddingInfo:
    """Store embeddings computed elsewhere (``curator.precomputed``: .npy + ids, .npz, Parquet, a
    FiftyOne field) as the embedding set ``name`` of ``dataset``, as if a model had made them.

    Everything is checked before anything is written: 2-D, finite, one row for every sample of the
    dataset (no missing, unknown or duplicate ids), no all-zero row, and the width of an earlier set
    of the same name. The arrays go to temporary files, then one transaction records the set and
    moves them into place: a refused import leaves no row and no file; the same file imported again
    stores nothing twice.
    """
    import os

    from curator import precomputed

    keys, X = _read_source(source, "embeddings", ids)
    name = _import_name(name, str(source))
    ds, rows = run_step(settings, lambda s: (lambda d: (d, store_samples.listing(s, d)))(_dataset_id(s, dataset)))
    if not len(rows.ids):
        raise ValidationError(f"dataset {dataset!r} has no samples; ingest them before their embeddings")
    E = X[precomputed.match(keys, rows.ids, rows.uris, str(source))]
    norms = np.linalg.norm(E, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValidationError(f"--from {source}: {int((norms == 0).sum())} rows are all zeros; an embedding needs a "
                              "direction (cosine similarity)")
    E = (E / norms).astype(np.float32)
    sample_ids = np.asarray(rows.ids, dtype=np.int64)
    checksum = _content_hash(sample_ids, E)
    root = Path(settings.embeddings_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp_vec, tmp_ids = root / f".import-{checksum[:16]}.f32.tmp", root / f".import-{checksum[:16]}.ids.tmp"
    params = {"kind": PRECOMPUTED, "what": "embeddings", "source": str(source)}

    def write(s, _):
        same = store_emb.of_models(s, ds, store_models.ids_named(s, name))
        if same and same[0].dim != E.shape[1]:
            raise ValidationError(f"--from {source}: {E.shape[1]}-d embeddings, but embedding set {name!r} of dataset "
                                  f"{dataset!r} has {same[0].dim}; give the same width or another --name")
        row = _precomputed_row(s, name, checksum[:16], checksum, params)
        found = store_emb.find(s, ds, row.id)
        if found is not None and found.complete and found.count == len(sample_ids):
            return found  # imported before: nothing to write
        vec_name, ids_name = store_emb.file_names(ds, row.id)
        os.replace(tmp_vec, root / vec_name)
        os.replace(tmp_ids, root / ids_name)
        return store_emb.record_complete(s, ds, row.id, dim=E.shape[1], count=len(sample_ids))

    try:
        E.tofile(tmp_vec)
        sample_ids.tofile(tmp_ids)
        return run_step(settings, write=write)
    finally:
        for p in (tmp_vec, tmp_ids):
            p.unlink(missing_ok=True)


def import_predictions(settings: Settings, dataset: str, source: str, *, name: str | None = None,
                       ids=None) -> tuple[int, int, dict[str, np.ndarray]]:
    """Store class probabilities computed elsewhere as the scores of model row ``name``: the same
    kinds ``curator score`` stores (entropy, margin, least_confidence, variation_ratio, prediction,
    confidence), in one transaction, after every check (one column per class of the dataset, rows
    summing to 1, finite, one row for every sample). Returns (model id, rows, the scores)."""
    from types import SimpleNamespace

    from curator import precomputed
    from curator.pool import Pool
    from curator.rounds import predictions_of, scores_of

    keys, X = _read_source(source, "probs", ids)
    name = _import_name(name, str(source))

    def read(s):
        ds = _dataset_id(s, dataset)
        return store_samples.listing(s, ds), store_samples.classes(s, ds)

    rows, classes = run_step(settings, read)
    if not len(rows.ids):
        raise ValidationError(f"dataset {dataset!r} has no samples; ingest them before their predictions")
    P = precomputed.check_probs(X[precomputed.match(keys, rows.ids, rows.uris, str(source))], classes, str(source))
    sample_ids = np.asarray(rows.ids, dtype=np.int64)
    scores = scores_of(Pool(probs=P))
    stored = {**scores, **predictions_of(classes, SimpleNamespace(classes=classes), P)}
    checksum = _content_hash(sample_ids, P)
    params = {"kind": PRECOMPUTED, "what": "probs", "source": str(source), "classes": list(classes)}
    root = Path(settings.embeddings_dir)  # the matrix too, for `curator select --probs NAME`
    root.mkdir(parents=True, exist_ok=True)
    tmp_p, tmp_ids = root / f".probs-{checksum[:16]}.f32.tmp", root / f".probs-{checksum[:16]}.ids.tmp"

    def write(s, _):
        row = _precomputed_row(s, name, checksum[:16], checksum, params)
        store_samples.write_scores(s, row.id, sample_ids, stored)
        precomputed.write_probs(root, _dataset_id(s, dataset), row.id, tmp_p, tmp_ids)
        return row.id

    try:
        P.astype(np.float32).tofile(tmp_p)
        sample_ids.tofile(tmp_ids)
        return run_step(settings, write=write), len(sample_ids), scores
    finally:
        for p in (tmp_p, tmp_ids):
            p.unlink(missing_ok=True)


def stored_set(settings: Settings, dataset: str, name: str) -> int:
    """The model id of the embedding set ``name`` of ``dataset`` (imported, or computed by a model of
    that name or id), complete; "newest": the newest complete set. NotFoundError saying how to make one."""
    def read(s):
        ds = _dataset_id(s, dataset)
        if name == "newest":
            got = store_emb.newest_complete(s, ds)
            sets = [got] if got is not None else []
        else:
            ids = [int(name)] if str(name).isdigit() else store_models.ids_named(s, name)
            sets = store_emb.of_models(s, ds, ids)
        return sets

    sets = run_step(settings, read)
    if not sets:
        raise NotFoundError(f"dataset {dataset!r} has no embedding set {name!r}; import one with: curator embed "
                            f"--dataset {dataset} --from FILE --name {name} (or compute one with --model)")
    if not sets[0].complete:
        raise ValidationError(f"embedding set {name!r} of dataset {dataset!r} is {sets[0].done}/{sets[0].count} done; "
                              "run curator embed again to finish it")
    return sets[0].model_id
