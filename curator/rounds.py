"""Rounds: train a model on the labels, score the unlabeled pool, select and record a batch.

The heavy work (loading images, inference, the policy) happens before the
database is touched; what a step records is written in one transaction, so a
round that fails (bad input, unknown policy, budget larger than the pool)
leaves nothing behind. Positions into the pool are turned into sample ids
here, once.

The pool of a dataset: its samples (of ``split`` if given) that are not exact
copies of another sample, have no agreed label, and are not waiting for a
label in an earlier round that is not finished.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from curator import seeds
from curator.exceptions import BudgetError, NotFoundError, StaleSelectionError, ValidationError
from curator.settings import Settings
from curator.store import rounds as store_rounds
from curator.store.schema import Dataset, Model, Sample, Score
from curator.store.queries import dataset_classes, agreed_labels, dataset_id
from curator.store.session import transaction

__all__ = [
    "TrainedModel", "ScoredPool", "RoundResult", "train_model", "load_model", "test_error",
    "pool_ids", "policy_from", "check_pool_args", "score_pool", "select_round", "round_items",
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


def _classes(session: Session, ds: int, labels) -> list[str]:
    stored = session.scalar(select(Dataset.classes).where(Dataset.id == ds)) or []
    names = [str(c) for c in stored]
    extra = sorted({str(x) for x in labels} - set(names))
    return names + extra


def _uris(session: Session, ids) -> list[str]:
    ids = [int(i) for i in ids]
    rows: dict[int, str] = {}
    for s0 in range(0, len(ids), 10_000):
        chunk = ids[s0: s0 + 10_000]
        rows.update(session.execute(select(Sample.id, Sample.uri).where(Sample.id.in_(chunk))).all())
    missing = [i for i in ids if i not in rows]
    if missing:
        raise NotFoundError(f"sample ids {missing[:5]} do not exist")
    return [rows[i] for i in ids]


def _images(settings: Settings, ids) -> np.ndarray:
    from curator.images import load_images

    with transaction(settings) as s:
        uris = _uris(s, ids)
    return load_images(uris)


def train_model(settings: Settings, dataset: str, sample_ids, labels, *, seed: int = 0,
                epochs: int | None = None, steps: int | None = None, device=None,
                init: TrainedModel | None = None) -> TrainedModel:
    """Train the built-in CNN on ``sample_ids`` with ``labels`` (class names), save and register it.

    The weights go to ``<workspace>/models/<checksum>.pt``; the ``Model`` row
    (name ``smallcnn``, version = checksum) is created once per weights.
    """
    from curator.embeddings import register_model
    from curator.models import train_classifier

    sample_ids = [int(i) for i in sample_ids]
    labels = [str(x) for x in labels]
    if len(sample_ids) != len(labels):
        raise ValidationError(f"sample_ids has {len(sample_ids)} entries but labels has {len(labels)}")
    if not sample_ids:
        raise ValidationError("no labeled samples to train on; label some first")
    with transaction(settings) as s:
        ds = dataset_id(s, dataset)
        classes = init.classes if init is not None else _classes(s, ds, labels)
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValidationError(f"labels {unknown[:5]} are not classes of the model ({classes})")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[x] for x in labels], dtype=np.int64)
    X = _images(settings, sample_ids)
    adapter = train_classifier(X, y, num_classes=len(classes), seed=seed, epochs=epochs, steps=steps,
                               device=device, classes=classes, init=init.adapter if init else None)
    path = adapter.save(_models_dir(settings) / f"{adapter.version}.pt")
    params = {"seed": seed, "epochs": epochs, "steps": steps, "n_labels": len(y), "dataset": dataset}
    with transaction(settings) as s:
        model_id = register_model(s, adapter, path=str(path), params=params)
    return TrainedModel(model_id=model_id, adapter=adapter, classes=classes, path=str(path))


def load_model(settings: Settings, model: int | str | Path | TrainedModel) -> TrainedModel:
    """A TrainedModel from a model id, a saved ``.pt`` file, or a TrainedModel (returned as is)."""
    from curator.embeddings import register_model
    from curator.models import load_classifier

    if isinstance(model, TrainedModel):
        return model
    if isinstance(model, int) or (isinstance(model, str) and model.isdigit()):
        with transaction(settings) as s:
            row = s.get(Model, int(model))
            if row is None:
                known = s.scalars(select(Model.id).order_by(Model.id)).all()
                raise NotFoundError(f"model {model} does not exist (known ids: {list(known) or 'none'})")
            if not row.path:
                raise NotFoundError(f"model {model} has no weights file recorded; pass the .pt file instead")
            path = row.path
    else:
        path = str(model)
    adapter = load_classifier(path)
    with transaction(settings) as s:
        model_id = register_model(s, adapter, path=path)
    return TrainedModel(model_id=model_id, adapter=adapter, classes=[str(c) for c in adapter.classes], path=path)


def test_error(settings: Settings, dataset: str, model, *, split: str | None = "test") -> float:
    """Error rate of ``model`` on the samples of ``split`` that have ground truth."""
    model = load_model(settings, model)
    with transaction(settings) as s:
        ds = dataset_id(s, dataset)
        q = select(Sample.id, Sample.gt_label).where(Sample.dataset_id == ds, Sample.gt_label.is_not(None))
        if split:
            q = q.where(Sample.split == split)
        rows = s.execute(q.order_by(Sample.id)).all()
    if not rows:
        raise ValidationError(f"dataset {dataset!r} has no samples with ground truth in split {split!r}")
    index = {c: i for i, c in enumerate(model.classes)}
    y = np.array([index.get(str(g), -1) for _, g in rows])
    P = model.adapter.predict_proba(_images(settings, [i for i, _ in rows]))
    return float((P.argmax(1) != y).mean())


# -- the pool --------------------------------------------------------------------------------

def pool_ids(session: Session, ds: int, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(unlabeled pool ids, labeled-or-pending ids) of dataset ``ds``, in id order."""
    q = select(Sample.id).where(Sample.dataset_id == ds, Sample.duplicate_of_id.is_(None))
    if split:
        q = q.where(Sample.split == split)
    candidates = np.array(session.scalars(q.order_by(Sample.id)).all(), dtype=np.int64)
    labeled = set(agreed_labels(session, ds))
    taken = labeled | set(store_rounds.open_sample_ids(session, ds).tolist())
    mask = np.array([int(i) not in taken for i in candidates], dtype=bool)
    return candidates[mask], np.array(sorted(taken), dtype=np.int64)


def _labeled_embeddings(settings: Settings, ds: int, model: TrainedModel, ids: np.ndarray) -> np.ndarray:
    """Embeddings of labeled/pending samples: from the store when computed, else by inference."""
    if len(ids) == 0:
        return np.zeros((0, 1), np.float32)
    from curator import embeddings

    with transaction(settings) as s:
        try:
            all_ids, E = embeddings.load(s, settings, ds, model.model_id)
        except (NotFoundError, ValidationError):
            all_ids = None
    if all_ids is not None:
        where = np.searchsorted(all_ids, ids)
        if (where < len(all_ids)).all() and np.array_equal(all_ids[np.minimum(where, len(all_ids) - 1)], ids):
            return np.asarray(E[where])
    return model.adapter.embed(_images(settings, ids))


def drop_duplicates(settings, ds: int, ids: np.ndarray, taken: np.ndarray) -> tuple[np.ndarray, int]:
    """``ids`` without near copies: one sample per duplicate group (the lowest id) and none
    that copies a labeled or pending sample (``taken``).

    Compared on the cold-start embedding (content, not model features: what the
    default threshold was chosen for, see docs/dedup.md), so the groups are those
    ``curator dedup`` reports. Returns (kept ids, number dropped).
    """
    from curator import dedup
    from curator.embeddings import coldstart_vectors

    if len(ids) < 2 and not len(taken):
        return ids, 0
    both = [int(i) for i in ids] + [int(i) for i in taken]
    E = coldstart_vectors(settings, ds, both)
    groups = dedup.find_duplicates(E, labeled=np.arange(len(ids), len(both)))
    drop = np.zeros(len(ids), bool)
    for g in groups:  # representative first: a labeled one where the group has one
        members = g[1:][g[1:] < len(ids)]
        drop[members] = True
    return ids[~drop], int(drop.sum())


def _build_pool(settings, dataset, model, split, subsample, seed, mc_samples, dedup=False, scored=None):
    """(dataset id, model, pool ids, Pool, near copies removed, number of the round it is for).

    Its random draws (the subsample, MC dropout) come from the user's ``seed`` and the number of
    the round being selected (``curator.seeds``), never from how much is labeled already.
    """
    from curator import Pool

    model = load_model(settings, model)
    with transaction(settings) as s:
        ds = dataset_id(s, dataset)
        ids, taken = pool_ids(s, ds, split)
        number = store_rounds.next_number(s, ds)
    if scored is not None:  # the model's outputs from score_pool: no second pass over the pool
        if scored.model_id != model.model_id or scored.number != number or not np.isin(scored.sample_ids, ids).all():
            raise ValidationError(
                "the scored pool is stale (another model, or samples labeled or selected since it was "
                "scored); score it again with this model"
            )
        ids, removed = scored.sample_ids, 0
        if dedup:
            kept, removed = drop_duplicates(settings, ds, ids, taken)
            pos = np.flatnonzero(np.isin(ids, kept))
            return ds, model, ids[pos], scored.pool.subset(pos), removed, number
        return ds, model, ids, scored.pool, removed, number
    if len(ids) == 0:
        from curator.exceptions import EmptyPoolError

        raise EmptyPoolError(
            f"dataset {dataset!r} has no unlabeled samples{f' in split {split!r}' if split else ''}; "
            "ingest more or label fewer"
        )
    if subsample is not None and len(ids) > subsample:
        rng = seeds.rng(seed, round=number, stage="subsample")
        ids = np.sort(rng.choice(ids, size=subsample, replace=False))
    removed = 0
    if dedup:
        ids, removed = drop_duplicates(settings, ds, ids, taken)
    pred = model.adapter.predict(_images(settings, ids), mc_samples=mc_samples,
                                 seed=seeds.derive(seed, round=number, stage="score"))
    L = _labeled_embeddings(settings, ds, model, taken) if len(taken) else None
    pool = Pool(embeddings=pred.embeddings, probs=pred.probs, mc_probs=pred.mc_probs,
                labeled_embeddings=L, ids=ids)
    return ds, model, ids, pool, removed, number


def _scores(pool) -> dict[str, np.ndarray]:
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


def _predictions(session: Session, dataset: str, model: TrainedModel, probs: np.ndarray) -> dict[str, np.ndarray]:
    """The model's answer as two stored kinds: ``prediction`` (index into the dataset's
    classes; NaN when the model's class is not one of them) and ``confidence``.

    Label Studio shows them as pre-annotations and FiftyOne as a Classification.
    """
    index = {c: i for i, c in enumerate(dataset_classes(session, dataset))}
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


def check_pool_args(settings: Settings, dataset: str, *, split: str | None = None, subsample: int | None = None,
                    seed: int = 0, mc_samples: int = 20, budget: int | None = None, policy: str | None = None,
                    params: dict | None = None, at_most: bool = False):
    """Refuse bad arguments of a scoring or selection step before any work is done.

    Training, inference and writes come after this, so a bad budget, subsample,
    seed, number of MC passes, policy or parameter, an unknown dataset or an
    empty pool costs milliseconds and changes nothing. Reads the pool's size
    (one query) to refuse a budget larger than it. Returns the configured
    policy when ``policy`` is given.
    """
    import numbers

    caller = "select" if budget is not None else "score"
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
    with transaction(settings) as s:
        ids, _ = pool_ids(s, dataset_id(s, dataset), split)
    if len(ids) == 0:
        from curator.exceptions import EmptyPoolError

        raise EmptyPoolError(
            f"dataset {dataset!r} has no unlabeled samples{f' in split {split!r}' if split else ''}; "
            "ingest more or label fewer"
        )
    n = min(len(ids), subsample) if subsample else len(ids)
    if budget is not None and budget > n and not at_most:
        raise BudgetError(
            f"{caller}: budget {budget} is larger than the pool ({n} samples"
            f"{' in the subsample' if subsample and subsample < len(ids) else ''}); lower the budget"
        )
    return pol


def score_pool(settings: Settings, dataset: str, model, *, split: str | None = None,
               subsample: int | None = None, seed: int = 0, mc_samples: int = 20,
               record: bool = True) -> ScoredPool:
    """Score the unlabeled pool with ``model`` and (``record``) store one ``Score`` row per (sample, kind).

    Scores of the same (sample, kind, model) are replaced, so scoring twice
    stores nothing twice.
    """
    check_pool_args(settings, dataset, split=split, subsample=subsample, seed=seed, mc_samples=mc_samples)
    ds, model, ids, pool, _, number = _build_pool(settings, dataset, model, split, subsample, seed, mc_samples)
    scores = _scores(pool)
    if record:
        with transaction(settings) as s:
            stored = {**scores, **_predictions(s, dataset, model, pool.mean_probs)}
            for kind, values in stored.items():
                for s0 in range(0, len(ids), 5000):
                    chunk = ids[s0: s0 + 5000].tolist()
                    s.execute(delete(Score).where(Score.kind == kind, Score.model_id == model.model_id,
                                                  Score.sample_id.in_(chunk)))
                s.add_all([Score(sample_id=int(i), kind=kind, value=float(v), model_id=model.model_id)
                           for i, v in zip(ids, values) if np.isfinite(v)])
    return ScoredPool(sample_ids=ids, pool=pool, scores=scores, model_id=model.model_id, number=number)


def select_round(settings: Settings, dataset: str, model, *, budget: int, policy: str = "curator",
                 seed: int = 0, params: dict | None = None, split: str | None = None,
                 subsample: int | None = None, mc_samples: int = 20, dedup: bool = True,
                 at_most: bool = False, scored: ScoredPool | None = None) -> RoundResult:
    """Select ``budget`` samples of the pool with ``policy`` and record them as a new round.

    With ``dedup`` (the default) near copies are removed from the candidates first
    (``drop_duplicates``), so a round never holds two members of one duplicate
    group nor a copy of a labeled sample; how many is recorded in the round's
    parameters as ``duplicates_removed``. A budget larger than what is left is an
    error, or with ``at_most`` selects all of it (the loop, near the pool's end).
    ``scored``, the result of ``score_pool`` with the same model, saves a second
    pass of the model over the pool.

    The round (policy, parameters, seed, model) and its ranked samples with
    their scores are written in one transaction, after the policy succeeded.
    Several processes may select on one dataset at once: a sample is in at
    most one open round (the database refuses otherwise), and a selection
    whose samples another process took meanwhile is made again on the fresh
    pool, up to ``SELECT_TRIES`` times (then ``StaleSelectionError``).
    """
    # every argument (policy, parameters, budget, sizes, dataset) is refused before any work
    pol = check_pool_args(settings, dataset, split=split, subsample=subsample, seed=seed, mc_samples=mc_samples,
                          budget=budget, policy=policy, params=params, at_most=at_most)
    for _attempt in range(SELECT_TRIES):
        ds, model, ids, pool, removed, number = _build_pool(settings, dataset, model, split, subsample, seed, mc_samples,
                                                    dedup=dedup, scored=scored)
        scored = None  # a retry reads the pool afresh
        n = budget
        if n > len(ids) and (at_most or removed):
            if not at_most:
                raise BudgetError(
                    f"select_round: budget {n} is larger than the pool ({len(ids)} samples left after removing "
                    f"{removed} near duplicates); lower the budget (or select with dedup=False / --no-dedup)"
                )
            n = len(ids)
        positions, values = pol.select_scored(pool, budget=n, seed=seeds.derive(seed, round=number, stage="select"))
        chosen = ids[positions]
        recorded = {**pol.get_params(), **({"subsample": subsample} if subsample else {}),
                    "split": split, "mc_samples": mc_samples, "pool_size": int(len(ids) + removed),
                    **({"duplicates_removed": removed} if dedup else {"dedup": False})}
        round_id = _record_round(settings, ds, chosen, values, number=number, policy=policy,
                                 params=_jsonable(recorded), budget=n, seed=seed, model_id=model.model_id)
        if round_id is None:  # another process took some of these samples, or this number, meanwhile: again
            continue
        return RoundResult(round_id=round_id, number=number, policy=policy,
                           sample_ids=[int(i) for i in chosen],
                           scores=[None if not np.isfinite(v) else float(v) for v in values],
                           pool_size=len(ids) + removed, duplicates_removed=removed)
    raise StaleSelectionError(
        f"dataset {dataset!r}: other processes selected samples of this pool {SELECT_TRIES} times while this "
        "selection ran, so none was recorded; run the selection again"
    )


def _record_round(settings, ds: int, chosen, values, *, number, **round_args) -> int | None:
    """Write round ``number`` and its ranked items in one transaction; its id, or None when another
    process put some of ``chosen`` in an open round, or recorded round ``number``, first: the
    selection (whose random streams derive from ``number``) is stale and is made again.
    """
    from sqlalchemy.exc import IntegrityError

    try:
        with transaction(settings) as s:
            return store_rounds.create(s, ds, chosen, values, number=number, **round_args).id
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
