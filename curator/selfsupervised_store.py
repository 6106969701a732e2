"""The self-supervised encoder of a dataset: trained once, stored as a model and an embedding set.

``embed_dataset(settings, dataset)``: reuse the dataset's newest encoder while the pool has not
grown by ``settings.ssl_refresh_share`` (default 0.2) since it was trained, else train one on the
whole pool (``curator.selfsupervised.train_encoder``) with a checkpoint in the workspace, so a
killed run continues where it stopped. The encoder is recorded as a model (name ``ssl-encoder``,
version = checksum of its weights, its file and the file's sha256, ``params["dataset"]``, the pool
size and budget) and its embeddings of every sample as the embedding set of that model
(``curator.embeddings.compute_embeddings``: resumable, recomputed when samples were added).

Why a refresh share and not every round: training costs minutes, embedding seconds; new samples
are embedded by the old encoder at once, and an encoder trained on 5/6 of a pool places the last
sixth as well as its own (augmentations are generic; nothing is fitted to particular samples).
Past 20 % growth the pool may hold kinds of images the encoder never saw, so it is trained again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from curator import selfsupervised
from curator.exceptions import NotFoundError, ValidationError
from curator.settings import Settings
from curator.steps import run_step

__all__ = ["SSLResult", "embed_dataset", "needs_refresh", "newest_encoder", "load_dataset_encoder",
           "KIND", "calibrate_dataset"]

#: ``params["kind"]`` of an encoder's model row.
KIND = "selfsupervised"


@dataclasses.dataclass(frozen=True)
class SSLResult:
    model_id: int
    trained: bool  # False: an existing encoder was reused
    info: object  # the EmbeddingInfo of the set
    params: dict


def needs_refresh(trained_on: int, pool: int, share: float) -> bool:
    """Whether an encoder trained on ``trained_on`` samples must be trained again for a pool of
    ``pool``: once the pool has grown by more than ``share`` of what it was trained on."""
    if share <= 0:
        raise ValidationError(f"ssl_refresh_share must be > 0; got {share}")
    return pool > trained_on * (1.0 + share)


def newest_encoder(session, dataset: str):
    """The newest encoder model row trained on ``dataset`` (a ``ModelInfo``), or None."""
    from curator.store import models as store_models

    for mid in store_models.ids_named(session, selfsupervised.MODEL_NAME):
        row = store_models.find(session, mid)
        params = row.params or {}
        if params.get("kind") == KIND and params.get("dataset") == dataset:
            return row
    return None


def load_dataset_encoder(row) -> selfsupervised.Encoder:
    """The Encoder a model row records; refused when its file changed since (sha256)."""
    from curator.embeddings import file_sha256

    params = row.params or {}
    if not row.path or not Path(row.path).is_file():
        raise NotFoundError(f"the encoder file of model {row.id} ({row.path}) is missing; train it again: "
                            "curator embed --self-supervised --refresh")
    if params.get("weights_sha256") and file_sha256(row.path) != params["weights_sha256"]:
        raise ValidationError(f"the encoder file {row.path} of model {row.id} changed since it was recorded "
                              "(sha256 differs); train it again: curator embed --self-supervised --refresh")
    return selfsupervised.load_encoder(row.path)


def _workspace(settings: Settings) -> Path:
    return Path(settings.workspace) / "models"


def embed_dataset(settings: Settings, dataset: str, *, seed: int = 0, steps: int | None = None,
                  epochs: float | None = None, refresh: bool = False, progress: bool = True,
                  batch_size: int = 1024, threads: int | None = 2) -> SSLResult:
    """The dataset's self-supervised embedding set: reused, or trained and computed (see module doc).

    ``refresh`` trains a new encoder whatever the pool's growth. A run killed while training
    resumes from its checkpoint when called again with the same arguments; one killed while
    embedding resumes the embedding set.
    """
    from curator import embeddings, images
    from curator.embeddings import file_sha256
    from curator.store import models as store_models
    from curator.store import samples as store_samples
    from curator.store.queries import dataset_id

    def read(s):
        ds = dataset_id(s, dataset)
        rows = store_samples.listing(s, ds)
        return ds, rows, newest_encoder(s, dataset)

    ds, rows, row = run_step(settings, read)
    n = len(rows.ids)
    if n < 2:
        raise ValidationError(f"dataset {dataset!r} has {n} samples; a self-supervised encoder needs a pool "
                              "(at least 2, a few hundred to be useful): ingest more first")
    if row is not None and not refresh and not needs_refresh(int(row.params.get("pool", 0)), n,
                                                             settings.ssl_refresh_share):
        encoder = load_dataset_encoder(row)
        info = embeddings.compute_embeddings(settings, dataset, encoder, model_id=row.id, batch_size=batch_size)
        return SSLResult(row.id, False, info, dict(row.params))

    first = images.decode(rows.uris[0])
    spec = selfsupervised.default_input_spec(first)
    mode = "L" if spec.channels == 1 else "RGB"
    X = images.load_images(list(rows.uris), mode=mode, size=tuple(spec.size))
    folder = _workspace(settings)
    ckpt = folder / f"ssl-{ds}-seed{seed}.ckpt"
    encoder = selfsupervised.train_encoder(X, input_spec=spec, seed=seed, steps=steps, epochs=epochs,
                                           checkpoint=ckpt, progress=progress, threads=threads)
    del X
    path = encoder.save(folder / f"ssl-{ds}-{encoder.version}.pt")
    params = {"kind": KIND, "dataset": dataset, "pool": n, "seed": int(seed),
              "weights_sha256": file_sha256(path),
              "input_spec": {"size": list(spec.size), "channels": spec.channels},
              **{k: v for k, v in encoder.meta.items() if k in ("steps", "batch_size", "cpu_s", "loss_first",
                                                                   "loss_last", "temperature", "device")}}
    from curator.models.base import checksum_of

    checksum = checksum_of(encoder.module)
    model_row = run_step(settings, write=lambda s, _: store_models.register(
        s, selfsupervised.MODEL_NAME, encoder.version, checksum=checksum, path=str(path), params=params))
    ckpt.unlink(missing_ok=True)  # recorded: the next run reuses the encoder, not the checkpoint
    info = embeddings.compute_embeddings(settings, dataset, encoder, model_id=model_row.id, batch_size=batch_size)
    return SSLResult(model_row.id, True, info, params)


def calibrate_dataset(settings: Settings, dataset: str, *, seed: int = 0, samples: int | None = None) -> dict:
    """The calibrated near-duplicate threshold of the dataset's self-supervised embedding
    (``curator.selfsupervised.calibrate`` on the stored set and the encoder): a dict with
    ``threshold``, the rule and the two distributions' quantiles, plus ``model_id``."""
    from curator import images
    from curator.store import embeddings as store_emb
    from curator.store.queries import dataset_id

    def read(s):
        ds = dataset_id(s, dataset)
        row = newest_encoder(s, dataset)
        if row is None:
            raise NotFoundError(f"dataset {dataset!r} has no self-supervised embedding; compute it first: "
                                f"curator embed --dataset {dataset} --self-supervised")
        ids, E = store_emb.load(s, settings.embeddings_dir, ds, row.id)
        return ds, row, np.asarray(ids), np.asarray(E)

    ds, row, ids, E = run_step(settings, read)
    from curator import seeds

    k = min(samples or selfsupervised.CALIBRATION_SAMPLES, len(ids))
    positions = np.sort(np.random.default_rng(seeds.derive(seed, stage="ssl-calibrate", shard=2))
                        .choice(len(ids), size=k, replace=False))
    from curator.store import samples as store_samples

    uris = run_step(settings, lambda s: store_samples.uris(s, ids[positions]))
    encoder = load_dataset_encoder(row)
    spec = encoder.input_spec
    imgs = images.load_images(uris, mode="L" if spec.channels == 1 else "RGB", size=tuple(spec.size))
    out = selfsupervised.calibrate(imgs, E, encoder.embed, seed=seed, input_spec=spec, positions=positions)
    out["model_id"] = row.id
    return out
