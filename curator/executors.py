"""Executors: where the compute part of a step runs, in this process or on a cluster.

A step is read -> compute -> write; the compute part is one of three array functions, and an
executor runs them:

* ``predict(uris, model, *, mc_samples, seed, round, adapter=None) -> Predictions``:
  decode, embed, class probabilities and MC-dropout probabilities of the pool; ``model`` is a
  picklable ``curator.models.ModelSpec`` (or a built-in CNN ``.pt`` path), loaded where it runs;
* ``self_pairs(x, threshold, *, exact=None, seed=0) -> (i, j, sims, info)``: the near-duplicate
  self-join (contract of ``curator.index.self_pairs``);
* ``select(policy, pool, budget, *, seed) -> (positions, values)``: a policy's choice
  (contract of ``Policy.select_scored``).

Every executor gives the same answer for the same inputs, model and seed: the pool is cut into
fixed shards of ``SHARD_SIZE`` consecutive positions whatever the executor, each shard draws its
randomness from ``curator.seeds.derive(seed, round=, stage=, shard=k)``, top-k ties are broken
by a hash of the global position (``curator.policies.base.tie_order``), and duplicate pairs are
re-ranked exactly (``curator.index.pair_sims``). The helpers below are the shard-level pieces;
an executor only decides where they run.

Core layer: numpy and the standard library; torch, faiss and ray are imported where used.
``get_executor`` imports ``curator.integrations.ray`` only when Ray is asked for.
"""

from __future__ import annotations

import importlib
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from curator.exceptions import MissingExtraError, ValidationError
from curator.settings import EXECUTORS  # the names accepted (CURATOR_EXECUTOR, get_executor)

__all__ = [
    "SHARD_SIZE", "EXECUTORS", "Executor", "LocalExecutor", "get_executor",
    "shard_bounds", "shard_seed", "image_format", "predict_shard", "concat_predictions",
    "prepare_select", "shard_candidates", "merge_candidates", "load_shipped",
]

#: Pool positions per shard: the unit of work and of randomness. Fixed (not a knob) because a
#: shard's MC-dropout stream is seeded by its index, so changing it changes the scores. 2048
#: images of 28 x 28 decode to 1.6 MB and a 224 x 224 x 3 shard to 300 MB: memory stays bounded
#: per worker, while a 10M pool still makes ~5,000 tasks, enough to balance over hundreds of
#: workers, yet few enough that per-task overhead (~ms in Ray) stays under 1 % of the work.
SHARD_SIZE = 2048



@runtime_checkable
class Executor(Protocol):
    """What the steps need from an executor (see the module docstring for each contract)."""

    name: str

    def predict(self, uris: Sequence[str], model_path, *, mc_samples: int, seed: int, round: int,
                adapter=None): ...

    def self_pairs(self, x: np.ndarray, threshold: float, *, exact: bool | None = None, seed: int = 0): ...

    def select(self, policy, pool, budget: int, *, seed): ...


# --------------------------------------------------------------------------- predict pieces


def shard_bounds(n: int, size: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) of every shard of ``n`` positions, in order."""
    size = SHARD_SIZE if size is None else int(size)
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def shard_seed(seed: int, round: int, shard: int) -> int:
    """The MC-dropout seed of shard ``shard`` of a round's scoring."""
    from curator import seeds

    return seeds.derive(seed, round=round, stage="score", shard=shard)


def image_format(uris: Sequence[str], adapter=None) -> tuple[str, tuple[int, int]]:
    """(mode, (H, W)) every shard decodes to: what the model's ``InputSpec`` declares, the rest
    from the pool's first image (``curator.images.frame``), so shards stack and agree."""
    from curator.images import frame

    mode, size, _ = frame(uris, adapter)
    return mode, size


def predict_shard(adapter, uris: Sequence[str], *, mc_samples: int, seed: int, mode: str,
                  size: tuple[int, int]):
    """Predictions of one shard: decoded here, so memory is bounded by the shard. What the
    model's ``InputSpec`` declares (channels, size, resize mode) overrides ``mode``/``size``, so
    every executor decodes a pool the same way whatever it computed up front."""
    from curator.images import load_images

    spec = getattr(adapter, "input_spec", None)
    mode = {1: "L", 3: "RGB"}.get(getattr(spec, "channels", None), mode)
    size = getattr(spec, "size", None) or size
    images = load_images(list(uris), mode=mode, size=tuple(size), spec=spec)
    return adapter.predict(images, mc_samples=mc_samples, seed=seed)


def concat_predictions(parts):
    """One Predictions from the shards' Predictions, in shard order."""
    from curator.models import Predictions

    mc = None if parts[0].mc_probs is None else np.concatenate([p.mc_probs for p in parts], axis=1)
    return Predictions(probs=np.concatenate([p.probs for p in parts]),
                       embeddings=np.concatenate([p.embeddings for p in parts]), mc_probs=mc)


def _check_predict(uris, mc_samples, seed, round) -> list[str]:
    from curator._validation import check_positive_int

    uris = [str(u) for u in uris]
    if not uris:
        raise ValidationError("predict: no images to score (empty list of URIs)")
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, (int, np.integer)) or mc_samples < 0 \
            or mc_samples == 1:
        raise ValidationError(f"predict: mc_samples must be 0 (off) or at least 2; got {mc_samples!r}")
    check_positive_int(seed, name="seed", caller="predict", minimum=0)
    check_positive_int(round, name="round", caller="predict", minimum=0)
    return uris


def load_shipped(model):
    """The adapter of what a step ships to a worker: a ``curator.models.ModelSpec`` (any model a spec
    names: it pickles, and builds the same adapter in every process) or a built-in CNN ``.pt`` path."""
    from curator.models import ModelSpec, load_classifier

    if model is None:
        raise ValidationError("predict: pass the model (a ModelSpec or a .pt file saved by curator) or adapter")
    if isinstance(model, ModelSpec):
        return model.load()
    return load_classifier(model)


# --------------------------------------------------------------------------- select pieces


def prepare_select(policy, pool, budget, seed):
    """Validate as ``Policy.select_scored`` does; return (policy, budget, tie key) when per-shard
    top-k gives its exact answer (``policy.is_shardable``), else None (run it whole).

    The tie key is the first draw of the policy's generator, as in ``top_k``: the merged answer
    is then the one ``select_scored`` gives, bit for bit."""
    from curator._validation import check_budget, check_seed
    from curator.policies import get as get_policy
    from curator.policies.base import Policy, tie_key
    from curator.pool import Pool

    policy = policy if isinstance(policy, Policy) else get_policy(policy)
    if not policy.is_shardable:
        return None
    if not isinstance(pool, Pool):
        raise ValidationError(f"policy {policy.label}: pool must be a curator.Pool; got {type(pool).__name__}")
    budget = check_budget(budget, len(pool), caller=f"policy {policy.label}")
    policy.check_pool(pool)
    return policy, budget, tie_key(check_seed(seed))


def shard_candidates(policy, pool, start: int, stop: int, budget: int, key: int):
    """The best ``budget`` of pool positions [start, stop): (global positions, scores)."""
    from curator.policies.base import keyed_top

    part = pool.subset(np.arange(start, stop)) if (start, stop) != (0, len(pool)) else pool
    scores = np.asarray(policy.score(part), dtype=np.float64)
    positions = np.arange(start, stop, dtype=np.int64)
    best = keyed_top(scores, positions, key, budget)
    return positions[best], scores[best]


def merge_candidates(policy, parts, budget: int, key: int, n: int):
    """The global top ``budget`` of the shards' candidates (every global winner is among its
    shard's top ``budget``, and the order is a function of (score, key, position) only)."""
    from curator.policies.base import _check_answer, keyed_top

    positions = np.concatenate([p for p, _ in parts])
    scores = np.concatenate([s for _, s in parts])
    best = keyed_top(scores, positions, key, budget)
    return _check_answer(policy.label, positions[best], scores[best], budget, n)


# --------------------------------------------------------------------------- executors


class LocalExecutor:
    """Everything in this process, shard after shard (memory bounded by one shard)."""

    name = "local"

    def connect(self) -> "LocalExecutor":
        """Nothing to join (``RayExecutor.connect`` joins its cluster)."""
        return self

    def predict(self, uris, model_path=None, *, mc_samples: int, seed: int, round: int, adapter=None):
        uris = _check_predict(uris, mc_samples, seed, round)
        if adapter is None:
            adapter = load_shipped(model_path)
        mode, size = image_format(uris, adapter)
        parts = [predict_shard(adapter, uris[a:b], mc_samples=mc_samples, seed=shard_seed(seed, round, k),
                               mode=mode, size=size)
                 for k, (a, b) in enumerate(shard_bounds(len(uris)))]
        return concat_predictions(parts)

    def self_pairs(self, x, threshold, *, exact=None, seed=0):
        from curator import index

        return index.self_pairs(x, threshold, exact=exact, seed=seed)

    def select(self, policy, pool, budget, *, seed):
        from curator.policies import get as get_policy
        from curator.policies.base import Policy

        policy = policy if isinstance(policy, Policy) else get_policy(policy)
        return policy.select_scored(pool, budget, seed)

    def __repr__(self) -> str:
        return "LocalExecutor()"


def get_executor(settings_or_name="local", **options) -> Executor:
    """The executor a Settings (its ``executor`` and ``ray_*`` fields) or a name asks for.

    ``options`` override the settings (``address``, ``batch_size``, ``concurrency``, ``num_cpus``,
    ``num_gpus`` for Ray). Ray is imported only here and only for ``"ray"``."""
    from curator.settings import Settings

    if isinstance(settings_or_name, Settings):
        s = settings_or_name
        name = s.executor
        if name == "ray":
            options = {"address": s.ray_address, "batch_size": s.ray_batch_size, "concurrency": s.ray_concurrency,
                       "num_cpus": s.ray_num_cpus, "num_gpus": s.ray_num_gpus, **options}
    else:
        name = settings_or_name
    if name not in EXECUTORS:
        raise ValidationError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)} "
                              "(--executor, CURATOR_EXECUTOR or executor in the config file)")
    if name == "local":
        if options:
            raise ValidationError(f"the local executor takes no options; got {', '.join(sorted(options))}")
        return LocalExecutor()
    target, package, extra = _EXTERNAL[name]
    module, _, cls = target.partition(":")
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == package:
            raise MissingExtraError(package, extra) from None
        raise
    return getattr(found, cls)(**options)


#: Executors that live in an integration: "module:class", the package it needs, its extra. Named
#: here, not imported, so the core never depends on the layer above it (as ``curator.__init__``).
_EXTERNAL = {"ray": ("curator.integrations.ray:RayExecutor", "ray", "ray")}
