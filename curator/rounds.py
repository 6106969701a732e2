"""Rounds: train a model on the labels, score the unlabeled pool, select and record a batch.

Every step is read -> compute -> write through ``curator.steps.run_step``: one
short transaction reads what the step needs (ids, URIs, stored vectors), the
heavy work (loading images, inference, de-duplication, the policy) runs on
those arrays with no session, and one short transaction records the result, so
a round that fails (bad input, unknown policy, budget larger than the pool)
leaves nothing behind. The parts marked ``COMPUTE`` are plain functions of
arrays that an executor may run elsewhere. Positions into the pool are turned
into sample ids here, once.

The pool of a dataset: its samples (of ``split`` if given) that are not exact
copies of another sample, have no agreed label, and are not waiting for a
label in an earlier round that is not finished.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from curator import seeds
from curator.exceptions import BudgetError, EmptyPoolError, NotFoundError, StaleSelectionError, ValidationError
from curator.settings import Settings
from curator.executors import get_executor
from curator.steps import run_step
from curator.store import models as store_models
from curator.store import rounds as store_rounds
from curator.store import samples as store_samples
from curator.store.queries import dataset_id

__all__ = [
    "TrainedModel", "ScoredPool", "RoundResult", "train_model", "load_model", "test_error",
    "pool_ids", "policy_from", "check_pool_args", "score_pool", "select_round", "round_items", "drop_duplicates",
    "drop_duplicates_in", "scores_of", "predictions_of", "train_own_model", "trains", "mc_samples_for", "predict_probs", "subsample_ids",
]

#: Rounds whose selected samples are still waiting for labels.
OPEN_STATUSES = store_rounds.OPEN_STATUSES

#: How many times ``select_round`` reads the pool and selects again when other processes took some of
#: the chosen samples first; each retry means another round was recorded meanwhile, so 5 covers a
#: handful of users at once. After that: ``StaleSelectionError``.
SELECT_TRIES = 5


@dataclasses.dataclass
class TrainedModel:
    model_id: int
    adapter: object  # a curator.models.CNNAdapter (or any ModelAdapter)
    classes: list[str]
    path: str | None = None
    #: what an executor ships to its workers (a picklable ``curator.models.ModelSpec``); None: the
    #: built-in CNN's weights file at ``path``
    spec: object = None
    #: with no adapter: what the stored outputs of ``model_id`` are, "embeddings" (``curator embed
    #: --from``) or "probs" (``curator score --from``), selected on without running a model
    stored: str = "embeddings"


@dataclasses.dataclass
class ScoredPool:
    sample_ids: np.ndarray  # (n,) sample id of each pool position
    pool: object  # curator.Pool
    scores: dict[str, np.ndarray]  # kind -> (n,)
    model_id: int
    number: int = 1  # the round these scores are for (the next one): its number derives the random streams


@dataclasses.dataclass
class RoundResult:
    round_id: int
    number: int
    policy: str
    sample_ids: list[int]  # ranked: rank 0 first
    scores: list[float | None]
    pool_size: int
    duplicates_removed: int = 0  # candidates dropped as near copies of each other or of labeled samples


# -- models ----------------------------------------------------------------------------------

def _models_dir(settings: Settings) -> Path:
    return Path(settings.workspace) / "models"


def _classes(stored: list[str], labels) -> list[str]:
    """The dataset's classes, then labels it does not name yet (sorted)."""
    extra = sorted({str(x) for x in labels} - set(stored))
    return list(stored) + extra


def _images(uris: list[str], adapter=None) -> np.ndarray:
    """COMPUTE: decode the images at ``uris`` as ``adapter``'s InputSpec declares (no database)."""
    from curator.images import load_images

    return load_images(uris, spec=getattr(adapter, "input_spec", None))


def predict_probs(adapter, uris: list[str]) -> np.ndarray:
    """COMPUTE: the model's probabilities on ``uris``, decoded batch by batch (memory: one batch)."""
    from curator.images import iter_batches

    return np.concatenate([adapter.predict_proba(b) for b in
                           iter_batches(uris, 1024, spec=getattr(adapter, "input_spec", None), desc="test error")])


def train_model(settings: Settings, dataset: str, sample_ids, labels, *, seed: int = 0,
                epochs: int | None = None, steps: int | None = None, device=None,
                init: TrainedModel | None = None, semi=None, split: str | None = None) -> TrainedModel:
    """Train the built-in CNN on ``sample_ids`` with ``labels`` (class names), save and register it.

    One step: read the dataset's classes and the samples' URIs; train and save the weights to
    ``<workspace>/models/<checksum>.pt``; register the model (name ``smallcnn``, version =
    checksum; created once per weights).

    ``semi`` (a ``curator.semihead.SemiConfig``): the semi-supervised recipe, which also trains
    on confident pseudo-labels of the unlabeled pool samples (of ``split``), see
    ``_semi_read``; None: labels only (the supervised recipe). Recorded in the model's params.
    """
    from curator.embeddings import model_identity
    from curator.models import train_classifier

    sample_ids = [int(i) for i in sample_ids]
    labels = [str(x) for x in labels]
    if len(sample_ids) != len(labels):
        raise ValidationError(f"sample_ids has {len(sample_ids)} entries but labels has {len(labels)}")
    if not sample_ids:
        raise ValidationError("no labeled samples to train on; label some first")

    def read(s):
        ds = dataset_id(s, dataset)
        unl = _semi_read(s, settings, ds, sample_ids, semi, split, seed) if semi is not None else None
        return store_samples.classes(s, ds), store_samples.uris(s, sample_ids), unl

    def compute(data):
        stored, uris, unl = data
        classes = init.classes if init is not None else _classes(stored, labels)
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise ValidationError(f"labels {unknown[:5]} are not classes of the model ({classes})")
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[x] for x in labels], dtype=np.int64)
        extra, weight, semi_info = [], None, {}
        if unl is not None:
            extra, y_extra, w_extra, semi_info = _semi_compute(unl, y, len(classes), semi)
            if len(extra):
                weight = np.concatenate([np.ones(len(y), np.float32), w_extra])
                y = np.concatenate([y, y_extra])
        # one call: labeled and pseudo-labeled images share one frame (size, mode)
        images = _images(list(uris) + list(extra), init.adapter if init else None)
        adapter = train_classifier(images, y, num_classes=len(classes),
                                   seed=seed, epochs=epochs,
                                   steps=steps, device=device, classes=classes,
                                   init=init.adapter if init else None, sample_weight=weight)
        path = adapter.save(_models_dir(settings) / f"{adapter.version}.pt")
        return adapter, classes, str(path), model_identity(adapter), len(uris), semi_info

    def write(s, result):
        adapter, classes, path, (name, version, checksum), n, semi_info = result
        params = {"seed": seed, "epochs": epochs, "steps": steps, "n_labels": n, "dataset": dataset,
                  "input_spec": adapter.input_record(), **semi_info}
        model = store_models.register(s, name, version, checksum=checksum, path=path, params=params)
        return TrainedModel(model_id=model.id, adapter=adapter, classes=classes, path=path)

    return run_step(settings, read, compute, write)


def _semi_read(s: Session, settings, ds: int, labeled_ids, semi, split, seed: int):
    """READ for the semi-supervised recipe: the unlabeled pool samples (of ``split``; at most
    ``semi.max_pool``, a seeded subsample) and the cold-start vectors of labeled + pool samples."""
    from curator.embeddings import coldstart_read

    pool, _ = store_samples.pool_ids(s, ds, split)
    pool = subsample_ids(pool[~np.isin(pool, np.asarray(labeled_ids, np.int64))], semi.max_pool, seed, 0)
    rows = np.concatenate([np.asarray(labeled_ids, np.int64), pool])
    return pool, store_samples.uris(s, pool), coldstart_read(s, settings, ds, rows)


def _semi_compute(unl, y: np.ndarray, n_classes: int, semi):
    """COMPUTE: pseudo-labels of pool samples from the labels ``y`` (label propagation over the kNN
    graph of the pool embedding, ``curator.semihead``): (uris, labels, weights, params to record)."""
    from curator import semihead
    from curator.embeddings import coldstart_compute

    pool, pool_uris, cold = unl
    pos, y_extra, w, info = semihead.pool_pseudo_labels(coldstart_compute(cold), y, n_classes, semi)
    return [pool_uris[i] for i in pos], y_extra, w, info


def load_model(settings: Settings, model, *, weights=None, dataset: str | None = None) -> TrainedModel:
    """A TrainedModel from a model id, a model spec (``curator.models.resolve_model``: a curator
    ``.pt`` file, ``package.module:factory``, a TorchScript file, a registered name) with optional
    ``weights``, a recorded model name or path, or a TrainedModel (as is).

    The model is registered (once per weights) with its spec, so ``--model <id>`` later builds the
    same model again. ``dataset`` gives a model that declares no classes the dataset's class list.
    The work is in ``curator.embeddings.resolve_trained`` (one read, the model built with no
    session, one write).
    """
    from curator.embeddings import resolve_trained

    if isinstance(model, TrainedModel):
        return model
    model_id, adapter, classes, path, spec = resolve_trained(settings, model, weights=weights, dataset=dataset)
    return TrainedModel(model_id=model_id, adapter=adapter, classes=classes, path=path, spec=spec)


def trains(model: TrainedModel) -> str | None:
    """How ``model`` learns from labels: "fit hook" (its module's ``fit``), "built-in recipe" (the
    built-in CNN), or None: a model used frozen (scores and embeddings only)."""
    from curator.models.spec import fit_hook

    if model.spec is None or model.spec.kind in ("builtin", "file"):
        return "built-in recipe"
    return "fit hook" if fit_hook(model.spec) is not None else None


def mc_samples_for(model: TrainedModel, policy: str | None, asked: int, *, explicit: bool = True) -> int:
    """The MC-dropout passes to ask ``model`` for: ``asked``, or 0 for a model without dropout when
    the number was a default and ``policy`` does not need them; a policy that needs them with such a
    model is one ValidationError naming both (not an answer with BALD zero everywhere)."""
    has_dropout = getattr(model.adapter, "has_dropout", True)
    if has_dropout or not asked:
        return asked
    needs = policy is not None and "mc_probs" in policy_from(policy).requires
    if needs or explicit:
        what = f"policy {policy!r} needs MC-dropout samples" if needs else f"--mc {asked} asks for MC-dropout samples"
        raise ValidationError(f"{what}, but model {getattr(model.adapter, 'name', model.model_id)} has no dropout "
                              "layer; use a policy that does not need mc_probs (entropy, margin, least_confidence, "
                              "novelty, kcenter, badge, typical, coverage, curator) with --mc 0, or add "
                              "torch.nn.Dropout before the model's last layer")
    return 0


def train_own_model(settings: Settings, dataset: str, model, sample_ids, labels, *, seed: int = 0,
                    weights=None) -> TrainedModel:
    """A model given by spec, for ``labels``: trained by its fit hook (``curator.models.spec.fit_hook``)
    from the spec's weights, saved to ``<workspace>/models/<checksum>.state.pt`` and registered with
    the trained weights in its spec; without a hook the model as given (used frozen).

    One step: read the samples' URIs; load their images and run the hook; register the model.
    """
    import torch

    from curator.embeddings import file_sha256, model_identity
    from curator.images import load_image
    from curator.models.spec import ModelSpec, fit_hook, run_fit_hook, spec_record

    base = load_model(settings, model, weights=weights, dataset=dataset)
    hook = fit_hook(base.spec) if base.spec is not None else None
    if hook is None:
        return base
    sample_ids = [int(i) for i in sample_ids]
    labels = [str(x) for x in labels]
    if not sample_ids:
        raise ValidationError("no labeled samples to train on; label some first")
    index = {c: i for i, c in enumerate(base.classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValidationError(f"labels {unknown[:5]} are not classes of model {base.spec} ({base.classes}); "
                              "declare the full class list")

    def compute(uris):
        images = [load_image(u) for u in uris]  # a list: the model's declared input resizes each
        y = [index[x] for x in labels]
        module = run_fit_hook(hook, base.adapter, images, y, classes=base.classes, seed=seed, label=str(base.spec))
        path = _models_dir(settings) / f"{model_identity(base.adapter)[1]}-{seed}-{len(y)}.tmp"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, path)
        final = path.with_name(f"{file_sha256(path)[:16]}.state.pt")  # named by content: the same training, one file
        path.replace(final)
        trained = ModelSpec(base.spec.kind, base.spec.target, str(final), dict(base.spec.options))
        adapter = trained.load()  # from the file, as every worker will build it
        return adapter, trained, model_identity(adapter), len(y)

    def write(s, result):
        adapter, trained, (name, version, checksum), n = result
        params = {"spec": spec_record(trained), "weights_sha256": file_sha256(trained.weights), "seed": seed,
                  "n_labels": n, "dataset": dataset, "trained_by": "fit hook"}
        row = store_models.register(s, name, version, checksum=checksum, path=trained.weights, params=params)
        return TrainedModel(model_id=row.id, adapter=adapter, classes=base.classes, path=trained.weights,
                            spec=trained)

    return run_step(settings, lambda s: store_samples.uris(s, sample_ids), compute, write)


def test_error(settings: Settings, dataset: str, model, *, split: str | None = "test") -> float:
    """Error rate of ``model`` on the samples of ``split`` that have ground truth."""
    model = load_model(settings, model)

    def read(s):
        truth = store_samples.truth(s, dataset_id(s, dataset), split=split, known_only=True)
        return truth, store_samples.uris(s, truth.ids)

    def compute(data):
        truth, uris = data
        if not len(truth):
            raise ValidationError(f"dataset {dataset!r} has no samples with ground truth in split {split!r}")
        index = {c: i for i, c in enumerate(model.classes)}
        y = np.array([index.get(str(g), -1) for g in truth.labels])
        P = predict_probs(model.adapter, uris)  # COMPUTE: model
        return float((P.argmax(1) != y).mean())

    return run_step(settings, read, compute)


# -- the pool --------------------------------------------------------------------------------

#: (unlabeled pool ids, labeled-or-pending ids) of a dataset: ``curator.store.samples.pool_ids``.
pool_ids = store_samples.pool_ids


def _stored_or_uris(session: Session, settings, ds: int, model_id: int | None, ids: np.ndarray):
    from curator.embeddings import stored_or_uris

    return stored_or_uris(session, settings, ds, model_id, ids)


def _cold_read(session: Session, settings, ds: int, ids: np.ndarray):
    from curator.embeddings import coldstart_read

    return coldstart_read(session, settings, ds, ids)


def _cold_vectors(stored_or_uris) -> np.ndarray:
    from curator.embeddings import coldstart_compute

    return coldstart_compute(stored_or_uris)


def drop_duplicates(ids: np.ndarray, taken: np.ndarray, vectors: np.ndarray, *, search=None) -> tuple[np.ndarray, int]:
    """COMPUTE: ``ids`` without near copies: one sample per duplicate group (the lowest id) and none
    that copies a labeled or pending sample (``taken``). ``vectors`` are the cold-start embeddings
    of ``ids`` then ``taken``, row for row. Returns (kept ids, number dropped).

    Compared on the cold-start embedding (content, not model features: what the
    default threshold was chosen for, see docs/dedup.md), so the groups are those
    ``curator dedup`` reports.
    """
    from curator import dedup

    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < 2 and not len(taken):
        return ids, 0
    groups = dedup.find_duplicates(vectors, labeled=np.arange(len(ids), len(ids) + len(taken)), search=search)
    drop = np.zeros(len(ids), bool)
    for g in groups:  # representative first: a labeled one where the group has one
        members = g[1:][g[1:] < len(ids)]
        drop[members] = True
    return ids[~drop], int(drop.sum())


def drop_duplicates_in(settings, ds: int, ids: np.ndarray, taken: np.ndarray) -> tuple[np.ndarray, int]:
    """``drop_duplicates`` as a step: read the cold-start vectors of ``ids`` and ``taken``, then compute."""
    ids, taken = np.asarray(ids, dtype=np.int64), np.asarray(taken, dtype=np.int64)
    if len(ids) < 2 and not len(taken):
        return ids, 0
    both = np.concatenate([ids, taken])
    return run_step(settings, lambda s: _cold_read(s, settings, ds, both),
                    lambda got: drop_duplicates(ids, taken, _cold_vectors(got)))


def subsample_ids(ids: np.ndarray, subsample: int | None, seed: int, number: int) -> np.ndarray:
    """COMPUTE: the scored subset of the pool, drawn from (seed, round number) alone."""
    if subsample is None or len(ids) <= subsample:
        return ids
    rng = seeds.rng(seed, round=number, stage="subsample")
    return np.sort(rng.choice(ids, size=subsample, replace=False))


@dataclasses.dataclass(frozen=True)
class _PoolRead:
    """What a scoring or selection step reads, in one transaction."""

    dataset_id: int
    number: int  # of the round the pool is scored for (the next one)
    classes: list[str]
    pool_size: int  # unlabeled samples before the subsample
    ids: np.ndarray  # the candidates: the subsample, or the scored pool's ids
    taken: np.ndarray
    uris: list[str] | None  # of ``ids``, to score them (None: scores given)
    cold: tuple | None  # (stored, uris) of ids + taken for dedup
    labeled: tuple | None  # (stored, uris) of taken: the model's embeddings of labeled samples
    vectors: np.ndarray | None = None  # stored embeddings of ``ids`` (imported: no model to run)


def _read_pool(s: Session, settings, dataset, split, subsample, seed, model_id, *, dedup, scored,
               only=None, stored: bool | str = False) -> _PoolRead:
    """READ: the pool of the next round and everything its scoring needs (see ``_PoolRead``);
    ``only``: sample ids the pool is narrowed to (None: all); ``stored``: the embeddings of the pool too
    (a set imported with ``curator embed --from``), or "probs": its imported probabilities."""
    ds = dataset_id(s, dataset)
    pool, taken = store_samples.pool_ids(s, ds, split)
    if only is not None:
        pool = pool[np.isin(pool, np.asarray(list(only), dtype=np.int64))]
    number = store_rounds.next_number(s, ds)
    if scored is not None:  # the model's outputs from score_pool: no second pass over the pool
        if scored.model_id != model_id or scored.number != number or not np.isin(scored.sample_ids, pool).all():
            raise ValidationError(
                "the scored pool is stale (another model, or samples labeled or selected since it was "
                "scored); score it again with this model"
            )
        ids, uris, labeled = scored.sample_ids, None, None
    else:
        ids = subsample_ids(pool, subsample, seed, number)
        uris = store_samples.uris(s, ids)
        labeled = _stored_or_uris(s, settings, ds, model_id, taken) if len(taken) else None
    cold = _cold_read(s, settings, ds, np.concatenate([ids, taken])) if dedup and (len(ids) >= 2 or len(taken)) \
        else None
    vectors = None
    if stored == "probs" and len(ids):
        from curator.precomputed import probs_of

        vectors = probs_of(settings.embeddings_dir, ds, model_id, ids, len(store_samples.classes(s, ds)))
    elif stored and len(ids):
        from curator.store import embeddings as store_emb

        vectors = store_emb.vectors_of(s, settings.embeddings_dir, ds, model_id, ids)
    return _PoolRead(dataset_id=ds, number=number, classes=store_samples.classes(s, ds), pool_size=len(pool),
                     ids=ids, taken=taken, uris=uris, cold=cold, labeled=labeled, vectors=vectors)


def _build_pool(got: _PoolRead, model: TrainedModel, seed: int, mc_samples: int, scored=None, executor=None):
    """COMPUTE: (pool ids, Pool, near copies removed) from what ``_read_pool`` read; no session.

    The model's pass over the images and the duplicate search run on ``executor``
    (``curator.executors``: in this process, or on a Ray cluster), which gives the same answer
    either way. Its random draws (the subsample, MC dropout) come from the user's ``seed`` and the
    number of the round being selected (``curator.seeds``), never from how much is labeled already
    nor from how the work is split.
    """
    from curator import Pool
    from curator.executors import LocalExecutor

    executor = executor or LocalExecutor()

    ids, removed = got.ids, 0
    if got.cold is not None:
        kept, removed = drop_duplicates(ids, got.taken, _cold_vectors(got.cold),  # COMPUTE: dedup
                                        search=executor.self_pairs)
        keep = np.flatnonzero(np.isin(ids, kept))
    else:
        keep = np.arange(len(ids))
    if scored is not None:
        return ids[keep], scored.pool.subset(keep) if removed else scored.pool, removed
    ids = ids[keep]
    if model.adapter is None and model.stored == "probs":  # imported probabilities: no model runs
        return ids, Pool(probs=got.vectors[keep], ids=ids), removed
    if model.adapter is None:  # imported embeddings: the pool is the stored vectors, no model runs
        L = got.labeled[0] if got.labeled is not None else None
        return ids, Pool(embeddings=got.vectors[keep], labeled_embeddings=L, ids=ids), removed
    uris = [got.uris[i] for i in keep.tolist()]
    # COMPUTE: the model, on the executor (Ray ships the model spec, or the weights file, to its model actors)
    ref = model.spec if model.spec is not None else model.path
    if executor.name == "local":
        shipped = {"adapter": model.adapter}
    elif model.spec is None and (not model.path or not Path(model.path).is_file()):
        raise ValidationError(f"model {model.model_id}: no weights file ({model.path or 'none recorded'}); the "
                              f"{executor.name} executor loads the model from it on its workers (pass --model FILE.pt)")
    else:
        shipped = {}
    pred = executor.predict(uris, ref, mc_samples=mc_samples, seed=seed, round=got.number, **shipped)
    L = None
    if got.labeled is not None:
        stored, labeled_uris = got.labeled
        L = stored if stored is not None else \
            executor.predict(labeled_uris, ref, mc_samples=0, seed=seed, round=got.number, **shipped).embeddings
    pool = Pool(embeddings=pred.embeddings, probs=pred.probs, mc_probs=pred.mc_probs,
                labeled_embeddings=L, ids=ids)
    return ids, pool, removed


def scores_of(pool) -> dict[str, np.ndarray]:
    """COMPUTE: every score kind of a pool (the policies' inputs as stored values)."""
    from curator import scores as S
    from curator.novelty import novelty

    out = {
        "entropy": S.entropy(pool.mean_probs),
        "margin": S.margin(pool.mean_probs),
        "least_confidence": S.least_confidence(pool.mean_probs),
        "variation_ratio": S.variation_ratio(pool.mean_probs),
    }
    if pool.mc_probs is not None:
        out["bald"] = S.bald(pool.mc_probs)
    if pool.labeled_embeddings is not None and len(pool.labeled_embeddings):
        out["novelty"] = novelty(pool.embeddings, pool.labeled_embeddings, k=1)
    return out


def predictions_of(classes: list[str], model: TrainedModel, probs: np.ndarray) -> dict[str, np.ndarray]:
    """COMPUTE: the model's answer as two stored kinds: ``prediction`` (index into the dataset's
    ``classes``; NaN when the model's class is not one of them) and ``confidence``.

    Label Studio shows them as pre-annotations and FiftyOne as a Classification.
    """
    index = {c: i for i, c in enumerate(classes)}
    top = probs.argmax(1)
    prediction = np.array([index.get(str(model.classes[k]), np.nan) for k in top], dtype=float)
    return {"prediction": prediction, "confidence": probs.max(1).astype(float)}


def policy_from(policy: str, params: dict | None = None):
    """Policy ``policy`` configured with ``params``; a value the policy cannot take is a
    ValidationError naming it (not the policy's own TypeError/ValueError traceback)."""
    from curator import policies
    from curator.exceptions import CuratorError

    if params is not None and not isinstance(params, dict):
        raise ValidationError(f"policy parameters must be a dict of NAME: VALUE; got {type(params).__name__}")
    try:
        return policies.get(policy, **(params or {}))
    except CuratorError:
        raise
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"policy {policy!r}: bad parameter value in {params} ({exc})") from None


def _check_args(caller: str, *, subsample, seed, mc_samples, budget, policy, params):
    """Refuse bad arguments (no database); the configured policy when ``policy`` is given."""
    import numbers

    pol = policy_from(policy, params) if policy is not None else None
    if subsample is not None and (isinstance(subsample, bool) or not isinstance(subsample, numbers.Integral)
                                  or subsample < 1):
        raise ValidationError(f"{caller}: subsample must be an integer >= 1 (samples scored); got {subsample!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValidationError(f"{caller}: seed must be an integer >= 0; got {seed!r}")
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, numbers.Integral) or mc_samples < 0 \
            or mc_samples == 1:
        raise ValidationError(f"{caller}: mc_samples (--mc) must be 0 (off) or at least 2; got {mc_samples!r}")
    if pol is not None and "mc_probs" in pol.requires and mc_samples == 0:
        raise ValidationError(f"{caller}: policy {policy!r} needs mc_probs (MC-dropout passes); pass --mc 2 or more")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 1):
        raise BudgetError(f"{caller}: budget must be an integer >= 1; got {budget!r}")
    return pol


def _check_size(caller: str, dataset: str, pool_size: int, *, split, subsample, budget, at_most) -> None:
    """Refuse an empty pool, or a budget larger than the pool (or its subsample)."""
    if pool_size == 0:
        raise EmptyPoolError(
            f"dataset {dataset!r} has no unlabeled samples{f' in split {split!r}' if split else ''}; "
            "ingest more or label fewer"
        )
    n = min(pool_size, subsample) if subsample else pool_size
    if budget is not None and budget > n and not at_most:
        raise BudgetError(
            f"{caller}: budget {budget} is larger than the pool ({n} samples"
            f"{' in the subsample' if subsample and subsample < pool_size else ''}); lower the budget"
        )


def check_pool_args(settings: Settings, dataset: str, *, split: str | None = None, subsample: int | None = None,
                    seed: int = 0, mc_samples: int = 20, budget: int | None = None, policy: str | None = None,
                    params: dict | None = None, at_most: bool = False):
    """Refuse bad arguments of a scoring or selection step before any work is done.

    Training, inference and writes come after this, so a bad budget, subsample,
    seed, number of MC passes, policy or parameter, an unknown dataset or an
    empty pool costs milliseconds and changes nothing. Reads the pool's size
    (one short read) to refuse a budget larger than it. Returns the configured
    policy when ``policy`` is given. (``score_pool`` and ``select_round`` make the
    same checks on the pool they read, so callers need not call this first.)
    """
    caller = "select" if budget is not None else "score"
    pol = _check_args(caller, subsample=subsample, seed=seed, mc_samples=mc_samples, budget=budget, policy=policy,
                      params=params)
    size = run_step(settings, lambda s: len(pool_ids(s, dataset_id(s, dataset), split)[0]))
    _check_size(caller, dataset, size, split=split, subsample=subsample, budget=budget, at_most=at_most)
    return pol


def score_pool(settings: Settings, dataset: str, model, *, split: str | None = None,
               subsample: int | None = None, seed: int = 0, mc_samples: int = 20,
               record: bool = True, only=None) -> ScoredPool:
    """Score the unlabeled pool with ``model`` and (``record``) store one score per (sample, kind).

    One step: read the pool, compute the model's outputs and the scores, write them. Scores of
    the same (sample, kind, model) are replaced, so scoring twice stores nothing twice.
    """
    _check_args("score", subsample=subsample, seed=seed, mc_samples=mc_samples, budget=None, policy=None,
                params=None)
    model = load_model(settings, model)
    executor = get_executor(settings)

    def read(s):
        got = _read_pool(s, settings, dataset, split, subsample, seed, model.model_id, dedup=False, scored=None,
                         only=only)
        _check_size("score", dataset, got.pool_size, split=split, subsample=subsample, budget=None, at_most=False)
        return got

    def compute(got):
        ids, pool, _ = _build_pool(got, model, seed, mc_samples, executor=executor)
        scores = scores_of(pool)
        stored = {**scores, **predictions_of(got.classes, model, pool.mean_probs)}
        return ScoredPool(sample_ids=ids, pool=pool, scores=scores, model_id=model.model_id, number=got.number), stored

    def write(s, result):
        scored, stored = result
        store_samples.write_scores(s, model.model_id, scored.sample_ids, stored)
        return scored

    if not record:
        return run_step(settings, read, compute)[0]
    return run_step(settings, read, compute, write)


def select_round(settings: Settings, dataset: str, model, *, budget: int, policy: str = "curator",
                 seed: int = 0, params: dict | None = None, split: str | None = None,
                 subsample: int | None = None, mc_samples: int = 20, dedup: bool = True,
                 at_most: bool = False, scored: ScoredPool | None = None, only=None) -> RoundResult:
    """Select ``budget`` samples of the pool with ``policy`` and record them as a new round.

    With ``dedup`` (the default) near copies are removed from the candidates first
    (``drop_duplicates``), so a round never holds two members of one duplicate
    group nor a copy of a labeled sample; how many is recorded in the round's
    parameters as ``duplicates_removed``. A budget larger than what is left is an
    error, or with ``at_most`` selects all of it (the loop, near the pool's end).
    ``scored``, the result of ``score_pool`` with the same model, saves a second
    pass of the model over the pool. ``only`` (sample ids) narrows the pool to those.

    One step: read the pool, compute (dedup, model, policy), write the round (policy,
    parameters, seed, model) and its ranked samples with their scores in one transaction.
    Several processes may select on one dataset at once: a sample is in at
    most one open round (the database refuses otherwise), and a selection
    whose samples another process took meanwhile is made again on the fresh
    pool, up to ``SELECT_TRIES`` times (then ``StaleSelectionError``).
    """
    # every argument (policy, parameters, budget, sizes) is refused before any work
    pol = _check_args("select", subsample=subsample, seed=seed, mc_samples=mc_samples, budget=budget, policy=policy,
                      params=params)
    model = load_model(settings, model)
    executor = get_executor(settings)
    for _attempt in range(SELECT_TRIES):
        def read(s, scored=scored):
            got = _read_pool(s, settings, dataset, split, subsample, seed, model.model_id, dedup=dedup, scored=scored,
                             only=only, stored=model.stored if model.adapter is None else False)
            _check_size("select", dataset, got.pool_size, split=split, subsample=subsample, budget=budget,
                        at_most=at_most)
            return got

        def compute(got, scored=scored):
            ids, pool, removed = _build_pool(got, model, seed, mc_samples, scored=scored, executor=executor)
            n = budget
            if n > len(ids) and (at_most or removed):
                if not at_most:
                    raise BudgetError(
                        f"select_round: budget {n} is larger than the pool ({len(ids)} samples left after removing "
                        f"{removed} near duplicates); lower the budget (or select with dedup=False / --no-dedup)"
                    )
                n = len(ids)
            # COMPUTE: the policy
            positions, values = executor.select(pol, pool, n, seed=seeds.derive(seed, round=got.number,
                                                                                      stage="select"))
            recorded = {**pol.get_params(), **({"subsample": subsample} if subsample else {}),
                        "split": split, "mc_samples": mc_samples, "pool_size": int(len(ids) + removed),
                        **({"duplicates_removed": removed} if dedup else {"dedup": False})}
            return got.dataset_id, got.number, ids[positions], values, _jsonable(recorded), n, len(ids) + removed, \
                removed

        ds, number, chosen, values, recorded, n, pool_size, removed = run_step(settings, read, compute)
        scored = None  # a retry reads the pool afresh
        round_id = _record_round(settings, ds, chosen, values, number=number, policy=policy, params=recorded,
                                 budget=n, seed=seed, model_id=model.model_id)
        if round_id is None:  # another process took some of these samples, or this number, meanwhile: again
            continue
        return RoundResult(round_id=round_id, number=number, policy=policy, sample_ids=[int(i) for i in chosen],
                           scores=[None if not np.isfinite(v) else float(v) for v in values],
                           pool_size=pool_size, duplicates_removed=removed)
    raise StaleSelectionError(
        f"dataset {dataset!r}: other processes selected samples of this pool {SELECT_TRIES} times while this "
        "selection ran, so none was recorded; run the selection again"
    )


def _record_round(settings, ds: int, chosen, values, *, number, **round_args) -> int | None:
    """The write of the selection step: round ``number`` and its ranked items in one transaction;
    its id, or None when another process put some of ``chosen`` in an open round, or recorded round
    ``number``, first: the selection (whose random streams derive from ``number``) is stale and is
    made again.
    """
    from sqlalchemy.exc import IntegrityError

    try:
        return run_step(settings, write=lambda s, _: store_rounds.create(s, ds, chosen, values, number=number,
                                                                         **round_args).id)
    except store_rounds.SamplesTaken:
        return None
    except IntegrityError as exc:  # a writer that skipped the lock (a script, an older curator) won
        if store_rounds.is_taken(exc):
            return None
        raise


def round_items(session: Session, dataset: str, number: int) -> list[tuple[int, int, float | None]]:
    """(rank, sample_id, score) of round ``number`` of ``dataset``, best first."""
    got = store_rounds.items(session, store_rounds.get(session, dataset_id(session, dataset), number))
    return [(int(r), int(i), None if not np.isfinite(v) else float(v))
            for r, i, v in zip(got.rank, got.sample_id, got.score)]


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
