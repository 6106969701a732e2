"""``RayExecutor``: predict with Ray Data and a pool of model actors, the duplicate self-join
as parallel per-cell tasks, selection as per-shard candidates and a driver merge.

It runs the shard-level pieces of ``curator.executors`` (the same functions the local executor
runs), cut at the same ``SHARD_SIZE`` boundaries and seeded the same way, so its answers are
the local executor's: scores to float tolerance, duplicate pairs and selections exactly.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import socket
from pathlib import Path

import numpy as np
import ray

from curator import executors as ex
from curator.exceptions import CuratorError, IntegrationError, ValidationError
from curator.models.spec import ModelSpec

__all__ = ["RayExecutor"]

#: Work items per CPU of the cluster for the self-join and selection tasks: a few per CPU so a
#: slow one does not hold the others up, few enough that task overhead (~ms each) stays small.
TASKS_PER_CPU = 4

#: Seconds to wait for the cluster's head to accept a connection before saying it is unreachable.
CONNECT_TIMEOUT_S = 5.0


def _check(name: str, value, kind, low: float, *, inclusive: bool):
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and (kind is float or float(value).is_integer()) and (value >= low if inclusive else value > low)
    if not ok:
        what = f"{'a whole number' if kind is int else 'a number'} {'>=' if inclusive else '>'} {low:g}"
        raise ValidationError(f"RayExecutor: {name} must be {what}; got {value!r}")
    return kind(value)


def _unwrap(exc: BaseException) -> BaseException:
    """The CuratorError a worker raised (one line for the CLI), found in Ray's wrapping; else ``exc``."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, CuratorError) and not isinstance(e, ray.exceptions.RayError):
            return e
        cause = getattr(e, "cause", None)
        if isinstance(cause, CuratorError):
            return cause
        stack += [cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__]
    return exc


def _error_payload(exc: CuratorError) -> bytes:
    return pickle.dumps(("error", type(exc).__module__, type(exc).__qualname__, str(exc)), protocol=5)


def _raise_payload(record) -> None:
    """Raise the CuratorError a shard sent back: its own class when it takes a message alone."""
    if not (isinstance(record, tuple) and len(record) == 4 and record[0] == "error"):
        return
    import importlib

    _, module, name, message = record
    try:
        cls = getattr(importlib.import_module(module), name)
        err = cls(message)
    except Exception:  # a class whose constructor wants more than the message
        err = CuratorError(message)
    raise err


class _Predictor:
    """A model actor of the Ray Data pool: the model loads once, in ``__init__``; each call
    predicts whole shards (decoded inside the actor, so memory is bounded by the batch)."""

    def __init__(self, model, mc_samples: int, mode: str, size):
        if isinstance(model, str) or isinstance(model, ModelSpec):
            model = ex.load_shipped(model)  # a ModelSpec (any model a spec names) or a .pt path: built here
        self.adapter = model
        self.mc_samples, self.mode, self.size = mc_samples, mode, tuple(size)

    def __call__(self, batch):
        payloads = []
        for uris, seed in zip(batch["uris"], batch["seed"]):
            try:
                p = ex.predict_shard(self.adapter, [str(u) for u in uris], mc_samples=self.mc_samples,
                                     seed=int(seed), mode=self.mode, size=self.size)
            except CuratorError as exc:  # bad input (an image missing or corrupt): sent back as data,
                payloads.append(_error_payload(exc))  # since Ray Data's wrapping loses the exception
                continue
            payloads.append(pickle.dumps((p.probs, p.embeddings, p.mc_probs), protocol=5))
        out = np.empty(len(payloads), dtype=object)
        out[:] = payloads
        return {"shard": np.asarray(batch["shard"], np.int64), "payload": out}


@ray.remote
def _search_cells(x, cells):
    """Exact range search inside each (base rows, query rows) cell of the partitioned self-join."""
    from curator import index

    out_q, out_b, out_s = [], [], []
    for b_idx, q_idx, t in cells:
        r, b, s = index._block_range(x[b_idx], x[q_idx], t)
        out_q.append(q_idx[r])
        out_b.append(b_idx[b])
        out_s.append(s)
    if not out_q:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(out_q), np.concatenate(out_b), np.concatenate(out_s)


@ray.remote
def _candidates(policy, pool, ranges, budget, key):
    """Each shard's top ``budget`` (global positions, scores) for the shards in ``ranges``."""
    return [ex.shard_candidates(policy, pool, a, b, budget, key) for a, b in ranges]


def _balanced(items, weights, parts: int):
    """``items`` cut into at most ``parts`` contiguous groups of about equal total weight."""
    if not items:
        return []
    cum = np.cumsum(np.asarray(weights, dtype=np.float64))
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts, side="right")
    bounds = [0, *sorted(set(int(c) for c in cuts if 0 < c < len(items))), len(items)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


class RayExecutor:
    """The compute of each step on a Ray cluster.

    Parameters
    ----------
    address : the cluster (``"127.0.0.1:6390"``, ``"ray://host:10001"``, ``"auto"``); None starts
        or joins a local one as ``ray.init()`` does.
    batch_size : shards (of ``curator.executors.SHARD_SIZE`` images) per model-actor call.
    concurrency : model actors in the Ray Data pool (each loads the model once).
    num_cpus, num_gpus : resources reserved by each model actor.
    runtime_env : passed to ``ray.init``; by default the driver's ``curator`` package is shipped
        to the workers (``py_modules``), so every node runs the driver's code.
    """

    name = "ray"

    def __init__(self, address: str | None = None, batch_size: int = 1, concurrency: int = 2,
                 num_cpus: float = 1.0, num_gpus: float = 0.0, runtime_env: dict | None = None):
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValidationError(f"RayExecutor: address must be host:port, ray://host:port or auto; got {address!r}")
        self.address = address.strip() if address else None
        self.batch_size = _check("batch_size", batch_size, int, 1, inclusive=True)
        self.concurrency = _check("concurrency", concurrency, int, 1, inclusive=True)
        self.num_cpus = _check("num_cpus", num_cpus, float, 0, inclusive=False)
        self.num_gpus = _check("num_gpus", num_gpus, float, 0, inclusive=True)
        self.runtime_env = runtime_env

    # -- connection ------------------------------------------------------------
    def connect(self) -> "RayExecutor":
        """Join the cluster now (a command does so before any work, so a wrong address costs
        seconds, not a trained model); the steps connect on first use otherwise."""
        self._connect()
        return self

    def _connect(self) -> None:
        """Join the cluster (once per process: Ray holds one connection, the first executor's)."""
        self._check_reachable()
        if ray.is_initialized():
            return
        import curator

        env = self.runtime_env
        if env is None:
            env = {"py_modules": [str(Path(curator.__file__).parent)], "excludes": ["__pycache__"]}
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the step's own progress is curator's to report
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        try:
            ray.init(address=self.address, runtime_env=env, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            where = self.address or "the default address"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IntegrationError(
                f"cannot reach the Ray cluster at {where} ({first}); start one with `ray start --head` "
                "or fix --ray-address / CURATOR_RAY_ADDRESS"
            ) from None

    def _check_reachable(self) -> None:
        """A host:port address must accept a connection: ``ray.init`` would retry a dead one for
        minutes before failing."""
        address = self.address or ""
        if address in ("", "auto", "local") or "://" in address or ":" not in address:
            return
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
                pass
        except (OSError, ValueError) as exc:
            raise IntegrationError(
                f"cannot reach the Ray cluster at {address} ({exc}); start one with `ray start --head "
                "--port PORT` there, or fix --ray-address / CURATOR_RAY_ADDRESS"
            ) from None

    def _cpus(self) -> int:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def _get(self, refs):
        try:
            return ray.get(refs)
        except ray.exceptions.RayError as exc:
            raise _unwrap(exc) from None

    # -- predict ---------------------------------------------------------------
    def predict(self, uris, model_path=None, *, mc_samples: int, seed: int, round: int, adapter=None):
        """Ray Data over the shard list: one row per shard (index, URIs, MC seed), a pool of model
        actors, results streamed back and put in shard order."""
        uris = ex._check_predict(uris, mc_samples, seed, round)
        if adapter is None and isinstance(model_path, ModelSpec):
            model = model_path  # plain data: pickled to the actors, each builds the adapter once
        elif adapter is None:
            if model_path is None:
                raise ValidationError("predict: pass the model (a ModelSpec or a .pt file saved by curator) or adapter")
            path = Path(model_path).resolve()
            if not path.is_file():
                raise ValidationError(f"model file {path} does not exist; train one with curator.models.train_classifier")
            model = str(path)
        else:
            model = adapter
        mode, size = ex.image_format(uris)
        bounds = ex.shard_bounds(len(uris))
        rows = [{"shard": k, "uris": uris[a:b], "seed": ex.shard_seed(seed, round, k)}
                for k, (a, b) in enumerate(bounds)]
        self._connect()
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _Predictor,
            fn_constructor_kwargs={"model": model, "mc_samples": int(mc_samples), "mode": mode, "size": list(size)},
            batch_size=self.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.concurrency),
            num_cpus=self.num_cpus, num_gpus=self.num_gpus or None,
        )
        parts = {}
        try:
            for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
                for k, blob in zip(batch["shard"], batch["payload"]):
                    parts[int(k)] = pickle.loads(blob)
        except Exception as exc:  # Ray Data wraps a worker's error in its own exceptions
            err = _unwrap(exc)
            if err is exc:
                raise
            raise err from None
        for k in sorted(parts):
            _raise_payload(parts[k])
        if sorted(parts) != list(range(len(bounds))):
            raise IntegrationError(f"Ray predict returned shards {sorted(parts)[:10]} of {len(bounds)}; rerun the step")
        from curator.models import Predictions

        return ex.concat_predictions([Predictions(probs=p, embeddings=e, mc_probs=m)
                                      for p, e, m in (parts[k] for k in range(len(bounds)))])

    # -- duplicates ------------------------------------------------------------
    def self_pairs(self, x, threshold, *, exact=None, seed=0):
        """``index.self_pairs`` with the partitioned search's cells searched as parallel tasks
        (the vectors put in the object store once). Small bases (``index.is_exact``) and
        ``exact=True`` are searched exactly here, as the local path does."""
        from curator import index

        n = len(x)
        # above index.STREAM_MIN_N dedup hands over rows as stored (a memory-mapped view, not
        # normalised): the cells are searched on unit rows, put in the object store once
        x = index.normalize(x[np.arange(n)]) if index.is_streamed(n) else index.as_float32(x)
        if n < 2 or index.is_exact(n, exact):
            return index.self_pairs(x, threshold, exact=exact, seed=seed)
        t = float(threshold) - index.SIM_EPS
        cells, info = index.cell_plan(x, x, t, self_join=True, seed=seed)
        self._connect()
        groups = _balanced([(b, q, t) for b, q in cells], [len(b) * len(q) for b, q in cells],
                           TASKS_PER_CPU * self._cpus())
        x_ref = ray.put(x)
        found = self._get([_search_cells.remote(x_ref, g) for g in groups])
        info = {**info, "executor": "ray", "tasks": len(groups)}
        q = np.concatenate([f[0] for f in found]) if found else np.empty(0, np.int64)
        b = np.concatenate([f[1] for f in found]) if found else np.empty(0, np.int64)
        s = np.concatenate([f[2] for f in found]) if found else np.empty(0, np.float32)
        keep = q != b
        q, b, s = q[keep], b[keep], s[keep]
        lo, hi = np.minimum(q, b), np.maximum(q, b)
        key, first = np.unique(lo * n + hi, return_index=True)
        return key // n, key % n, s[first], info

    # -- selection -------------------------------------------------------------
    def select(self, policy, pool, budget, *, seed):
        """Shardable policies (row-local score, plain top-k): each shard's top ``budget`` in
        parallel tasks, merged on the driver with the same tie order. Others run on the driver."""
        prepared = ex.prepare_select(policy, pool, budget, seed)
        if prepared is None:
            return ex.LocalExecutor().select(policy, pool, budget, seed=seed)
        policy, budget, key = prepared
        self._connect()
        bounds = ex.shard_bounds(len(pool))
        groups = _balanced(bounds, [b - a for a, b in bounds], TASKS_PER_CPU * self._cpus())
        policy_ref, pool_ref = ray.put(policy), ray.put(pool)
        found = self._get([_candidates.remote(policy_ref, pool_ref, g, budget, key) for g in groups])
        return ex.merge_candidates(policy, [part for group in found for part in group], budget, key, len(pool))

    def __repr__(self) -> str:
        return (f"RayExecutor(address={self.address!r}, batch_size={self.batch_size}, concurrency={self.concurrency}, "
                f"num_cpus={self.num_cpus}, num_gpus={self.num_gpus})")
