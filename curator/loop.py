"""The continuous-improvement loop: train, score, de-duplicate, select, label, version, evaluate.

Each round moves through states recorded on its ``rounds`` row:

    selected -> pushed -> labeled -> versioned -> done

and every step is idempotent, so ``run_loop`` called again after an
interruption (a killed process, a server restart, labelers not finished yet)
continues from the recorded state without repeating finished work or losing
labels. Round 0 is the seed set: balanced by ground truth when every pool
sample has some (a benchmark), else chosen without a model by the ``typical``
policy (TypiClust) on the cold-start embedding.

The learning curve: the error on a ground-truth test split when the dataset
has one; without one (a pool with no labels), an estimate from the human labels
themselves: k-fold cross-validation while they are few, a validation share of
each round's labels (kept out of training) once that share is large enough
(``curve_metric``). Each point records which (its metric), and the report says so.

Labelers: ``"oracle"`` answers from ground truth inside the database (demos
without a server); ``"answers"`` from a file of labels the loop reads for nothing
else (a pool with no ground truth, labeled as a person would: tests, benchmarks); ``"labelstudio-oracle"`` pushes to a real Label Studio
server and has the oracle stand-in answer there, as a person would;
``"labelstudio"`` pushes and waits for people (the loop returns while
labels are missing; run it again later).

Each step finds its round in the database, never from a counter of the
running process: round N's evaluation is trained on the labels as of round N
(every label except those of later rounds) and recorded under round N, once;
a resumed run skips what is recorded and repeats the rest with the same
seeds, so it stores the rows an uninterrupted run would have stored.

Every step runs through ``curator.steps.run_step`` (read -> compute -> write,
each database part one short transaction) and reads and writes through
``curator.store``: nothing here builds a query or holds an ORM row.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from curator import seeds
from curator.exceptions import ValidationError
from curator.steps import run_step
from curator.store import rounds as store_rounds
from curator.store import samples as store_samples
from curator.store.queries import add_annotations, agreed_labels, annotated_sample_ids, count_with_truth, dataset_id

log = logging.getLogger(__name__)

LABELERS = ("oracle", "answers", "labelstudio-oracle", "labelstudio")
STATES = ("selected", "pushed", "labeled", "versioned", "done")

#: Fault injection: ``CURATOR_FAULT_AT=<step>:<round>`` ends the process with exit status 137 (as
#: ``kill -9`` would: no clean-up, nothing flushed) just before ``step`` of round ``round`` runs.
#: tests/test_loop_resume.py kills the loop at every boundary and checks that the resumed run
#: stores what an uninterrupted one stores. Unset, a boundary costs one dictionary lookup.
FAULT_ENV = "CURATOR_FAULT_AT"
#: The step boundaries, in the order a round passes them ("mark-*" records the round's status
#: after the step before it did its work; "seed" is round 0's selection, "select" a later one's).
BOUNDARIES = ("seed", "select", "push", "mark-pushed", "label", "mark-labeled", "version", "mark-versioned",
              "mark-done", "evaluate", "baseline", "report")


def _boundary(step: str, number: int) -> None:
    """A step boundary: where ``CURATOR_FAULT_AT`` may kill the process (see ``FAULT_ENV``)."""
    if os.environ.get(FAULT_ENV) == f"{step}:{number}":
        os._exit(137)


def _check_fault() -> None:
    """A ``CURATOR_FAULT_AT`` that names no boundary would never fire: refuse it instead."""
    at = os.environ.get(FAULT_ENV)
    if at is None:
        return
    step, _, number = at.partition(":")
    if step not in BOUNDARIES or not number.isdigit():
        raise ValidationError(f"{FAULT_ENV}={at!r} is not <step>:<round> with a step of {', '.join(BOUNDARIES)}; "
                              f"unset it to run the loop normally")


@dataclasses.dataclass
class LoopConfig:
    dataset: str
    rounds: int = 3
    budget: int = 10
    initial: int = 20
    policy: str = "curator"
    seed: int = 0
    labeler: str = "oracle"
    pool_split: str | None = "train"
    test_split: str | None = "test"
    target_error: float | None = 0.05
    epochs: int | None = None  # None: the built-in recipe (200 to 2,000 steps)
    project: str | None = None  # Label Studio project title; default "curator-<dataset>"
    subsample: int | None = 2000  # candidates scored per round (None: the whole pool)
    baseline: bool = False  # also train on random picks of the same sizes: the report's baseline
    model: str | None = None  # a model spec (curator.models): None, the built-in CNN and its recipe
    weights: str | None = None  # the spec's weights file (package.module:factory, smallcnn)
    classes: list[str] | None = None  # declared class list (a pool with no ground truth); stored with the dataset
    answers: str | None = None  # labeler "answers": CSV (key,label) or JSON {key: label}; key: URI or file name
    supervised_only: bool = False  # built-in CNN: labels only (no pseudo-labels from the pool: curator.semihead)

    def check(self) -> None:
        if self.labeler not in LABELERS:
            raise ValidationError(f"labeler must be one of {', '.join(LABELERS)}; got {self.labeler!r}")
        if (self.labeler == "answers") != (self.answers is not None):
            raise ValidationError("--answers FILE goes with --labeler answers (and that labeler needs it); "
                                  f"got labeler {self.labeler!r} and answers {self.answers!r}")
        if self.answers is not None and not os.path.isfile(self.answers):
            raise ValidationError(f"answers file {self.answers} does not exist; pass a CSV or JSON file of labels")
        if self.classes is not None:
            from curator.classlist import check_names

            self.classes = check_names(self.classes, "classes")
        for name in ("rounds", "budget", "initial"):
            if getattr(self, name) < (0 if name == "rounds" else 1):
                raise ValidationError(f"{name} must be positive; got {getattr(self, name)}")


@dataclasses.dataclass
class LoopResult:
    rounds_done: int
    n_labels: int
    errors: list[tuple[int, float]]
    waiting: str | None = None  # why the loop stopped early (labels still missing)
    baseline: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # random selection, if asked
    metrics: list[str] = dataclasses.field(default_factory=list)  # the estimate of each point of ``errors``


# -- the learning curve's estimate ------------------------------------------------------------

#: The curve's metrics: error on a ground-truth test split; without one, estimated on human labels by
#: k-fold cross-validation or on a held-out validation share of them (``curve_metric``).
TEST_METRIC, CV_METRIC, HOLDOUT_METRIC = "test_error", "cv_error", "holdout_error"
CURVE_METRICS = (TEST_METRIC, CV_METRIC, HOLDOUT_METRIC)
#: Folds of the cross-validation estimate (stratified by label; each fold trains the round's recipe).
CV_FOLDS = 5
#: Share of each round's human labels held out for validation once labels are many (not trained on).
VALIDATION_SHARE = 0.2
#: Fewest validation labels a held-out estimate may rest on: its binomial standard error
#: sqrt(p(1-p)/m) is at most 0.05 at m = 100. Below that (fewer than MIN_VALIDATION / VALIDATION_SHARE
#: = 500 labels) every label validates once by cross-validation, at CV_FOLDS trainings per round,
#: which are cheap exactly then: the training sets are small.
MIN_VALIDATION = 100

#: What each metric is, as the report and the CLI say it.
ESTIMATES = {
    TEST_METRIC: "test error on the ground truth of the test split",
    CV_METRIC: (f"validation error estimated on the human labels by {CV_FOLDS}-fold cross-validation "
                f"(stratified by label; used while a {VALIDATION_SHARE:.0%} validation share would hold fewer "
                f"than {MIN_VALIDATION} labels); the model that selects trains on all labels"),
    HOLDOUT_METRIC: (f"validation error on a held-out {VALIDATION_SHARE:.0%} of each round's human labels, kept "
                     f"out of training (used from {int(MIN_VALIDATION / VALIDATION_SHARE)} labels on)"),
}


def curve_metric(n_labels: int, has_test: bool) -> str:
    """The estimate of a curve point: the test split when it has ground truth; else cross-validation
    while a validation share would be under ``MIN_VALIDATION`` labels, then the held-out share."""
    if has_test:
        return TEST_METRIC
    return HOLDOUT_METRIC if VALIDATION_SHARE * n_labels >= MIN_VALIDATION else CV_METRIC


@dataclasses.dataclass(frozen=True)
class RoundLabels:
    """The human labels as of a round, as the curve's estimate splits them."""

    metric: str
    n_labels: int  # every label as of the round (the x of the curve: what was paid for)
    train_ids: list[int]
    train_labels: list[str]
    val_ids: list[int]  # HOLDOUT_METRIC: kept out of training
    val_labels: list[str]


def _labels_read(s, cfg, ds: int, upto: int | None):
    """READ: the labels as of ``upto``, whether a ground-truth test split exists, each sample's round."""
    ids, labels = _labeled(s, ds, cfg.pool_split, upto)
    has_test = bool(count_with_truth(s, ds, cfg.test_split))
    round_of: dict[int, int] = {}
    if not has_test:
        numbers, items = store_rounds.all_items(s, ds)
        for number, sid in zip(numbers.tolist(), items.sample_id.tolist()):
            round_of.setdefault(int(sid), int(number))
    return ids, labels, has_test, round_of


def _split_labels(seed: int, ids, labels, has_test: bool, round_of: dict[int, int]) -> RoundLabels:
    """COMPUTE: the training and validation labels. The held-out share is drawn per round from
    (seed, round number) alone, so a round's validation samples stay the same as labels grow."""
    ids = [int(i) for i in ids]
    metric = curve_metric(len(ids), has_test)
    if metric != HOLDOUT_METRIC:
        return RoundLabels(metric, len(ids), ids, list(labels), [], [])
    by_round: dict[int, list[int]] = {}
    for sid in ids:
        if sid in round_of:  # labeled outside the loop's rounds: trained on, never held out
            by_round.setdefault(round_of[sid], []).append(sid)
    held: set[int] = set()
    for number, members in by_round.items():
        members = sorted(members)
        order = seeds.rng(seed, round=number, stage="validation").permutation(len(members))
        held.update(members[j] for j in order[: int(round(VALIDATION_SHARE * len(members)))])
    train = [(i, y) for i, y in zip(ids, labels) if i not in held]
    val = [(i, y) for i, y in zip(ids, labels) if i in held]
    return RoundLabels(metric, len(ids), [i for i, _ in train], [y for _, y in train],
                       [i for i, _ in val], [y for _, y in val])


def round_labels(settings, cfg: "LoopConfig", ds: int, upto: int | None) -> RoundLabels:
    """The labels as of round ``upto``, split as the curve's estimate needs (one read)."""
    return run_step(settings, lambda s: _labels_read(s, cfg, ds, upto),
                    lambda got: _split_labels(cfg.seed, *got))


# -- state -----------------------------------------------------------------------------------

def _set_status(settings, ds: int, number: int, status: str) -> None:
    run_step(settings, write=lambda s, _: store_rounds.set_status(s, ds, number, status))


def _labeled(session, ds: int, split: str | None, upto: int | None) -> tuple[np.ndarray, list[str]]:
    """READ: (ids, agreed labels) of the labeled samples of ``split``, as of round ``upto``."""
    labels = agreed_labels(session, ds)
    if upto is not None:
        later = set(store_rounds.sample_ids_after(session, ds, upto).tolist())
        labels = {k: v for k, v in labels.items() if k not in later}
    ids = store_samples.in_split(session, list(labels), split)
    return ids, [labels[int(i)][0] for i in ids]


def labeled_arrays(settings, ds: int, split: str | None, upto: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Sample ids and agreed labels of the labeled samples of ``split``; with ``upto``, as of round
    ``upto``: without the samples of later rounds, whenever (and however often) it is asked."""
    return run_step(settings, lambda s: _labeled(s, ds, split, upto))


# -- steps -----------------------------------------------------------------------------------

def _balanced(truth: store_samples.Truth, initial: int, seed: int) -> list[int]:
    """COMPUTE: ``initial`` sample ids balanced over ground-truth classes (random without it)."""
    rng = seeds.rng(seed, round=0, stage="seed-set")
    by_class: dict[str | None, list[int]] = {}
    for sid, label in zip(truth.ids.tolist(), truth.labels):
        by_class.setdefault(label, []).append(int(sid))
    for members in by_class.values():
        rng.shuffle(members)
    chosen: list[int] = []
    classes = sorted(by_class, key=str)
    while len(chosen) < initial:
        for c in classes:
            if by_class[c] and len(chosen) < initial:
                chosen.append(by_class[c].pop())
    return chosen


#: The cold-start policy of a seed round without ground truth, and how it is recorded.
SEED_POLICY = "typical"


def _typical_read(s, settings, cfg: LoopConfig, ds: int):
    """READ: the pool (its scored subsample), the labeled-or-pending samples, their cold-start vectors."""
    from curator.embeddings import coldstart_read
    from curator.rounds import subsample_ids

    pool, taken = store_samples.pool_ids(s, ds, cfg.pool_split)
    ids = subsample_ids(pool, cfg.subsample, cfg.seed, 0)
    cold = coldstart_read(s, settings, ds, np.concatenate([ids, taken])) if len(ids) >= cfg.initial else None
    return len(pool), ids, taken, cold


def _typical(pool_size: int, ids: np.ndarray, taken: np.ndarray, cold, cfg: LoopConfig):
    """COMPUTE: ``initial`` pool samples chosen without a model: ``typical`` (TypiClust) on the cold-start
    embedding, clusters holding labeled or pending samples counted as covered. (chosen, scores, params)."""
    from curator import coldstart, policies
    from curator.embeddings import coldstart_compute
    from curator.pool import Pool

    if len(ids) < cfg.initial:
        raise ValidationError(f"dataset has {pool_size} unlabeled pool samples in split {cfg.pool_split!r}, fewer "
                              f"than initial={cfg.initial}; ingest more or lower --initial")
    vectors = coldstart_compute(cold)
    pool = Pool(embeddings=vectors[: len(ids)], labeled_embeddings=vectors[len(ids):] if len(taken) else None,
                ids=ids)
    policy = policies.get(SEED_POLICY)
    positions, scores = policy.select_scored(pool, cfg.initial, seeds.derive(cfg.seed, round=0, stage="seed-set"))
    params = {"initial": cfg.initial, "embedding": coldstart.MODEL_NAME, "pool_size": int(pool_size),
              **({"subsample": cfg.subsample} if cfg.subsample and pool_size > cfg.subsample else {}),
              **policy.get_params()}
    return [int(i) for i in ids[positions]], np.asarray(scores, dtype=float), params


def seed_round(settings, cfg: LoopConfig, ds: int) -> None:
    """Round 0, chosen without a model: balanced over ground-truth classes when every pool sample has
    ground truth (a benchmark's seed set, as before); otherwise (a pool with no labels) the ``typical``
    policy on the cold-start embedding: the densest sample of each of ``initial`` clusters."""

    def read(s):
        if store_rounds.find(s, ds, 0) is not None:
            return None
        truth = store_samples.truth(s, ds, split=cfg.pool_split, pool_only=True)
        if len(truth) and all(label is not None for label in truth.labels):
            return "balanced", truth
        return "typical", _typical_read(s, settings, cfg, ds)

    def compute(got):
        if got is None:
            return None
        kind, data = got
        if kind == "typical":
            chosen, scores, params = _typical(*data, cfg)
            return chosen, scores, f"seed-{SEED_POLICY}", params
        if len(data) < cfg.initial:
            raise ValidationError(
                f"dataset has {len(data)} pool samples in split {cfg.pool_split!r}, fewer than initial={cfg.initial}"
            )
        chosen = _balanced(data, cfg.initial, cfg.seed)
        return chosen, np.full(len(chosen), np.nan), "seed-balanced", {"initial": cfg.initial}

    def write(s, got):
        if got is None:
            return
        chosen, scores, policy, params = got
        try:
            store_rounds.create(s, ds, chosen, scores, number=0, policy=policy,
                                params=params, budget=cfg.initial, seed=cfg.seed, model_id=None)
        except store_rounds.SamplesTaken:
            if store_rounds.find(s, ds, 0) is not None:  # another run of the loop recorded it meanwhile
                return
            raise ValidationError(
                f"dataset {cfg.dataset!r}: the loop's seed round 0 would take samples that a round selected "
                "outside the loop still holds; finish (label) that round first, or run the loop on a fresh dataset"
            ) from None

    run_step(settings, read, compute, write)


def read_answers(path: str) -> dict[str, str]:
    """The labels of an answers file: JSON ``{key: label}``, or CSV lines ``key,label`` (a first line
    ``...,label`` is a header). A key is a sample's URI or its file name."""
    import csv
    import json

    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"answers file {path} cannot be read ({exc}); pass a UTF-8 CSV or JSON file") from None
    if path.lower().endswith(".json"):
        try:
            got = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"answers file {path} is not valid JSON ({exc}); fix the file") from None
        if not isinstance(got, dict):
            raise ValidationError(f"answers file {path}: JSON must be an object of KEY: LABEL")
        return {str(k): str(v) for k, v in got.items()}
    rows = [r for r in csv.reader(text.splitlines()) if r]
    if rows and rows[0][-1].strip().lower() == "label":
        rows = rows[1:]
    bad = [i for i, r in enumerate(rows) if len(r) != 2 or not r[1].strip()]
    if bad:
        raise ValidationError(f"answers file {path}: line {bad[0] + 1} is not KEY,LABEL; fix the file")
    return {r[0].strip(): r[1].strip() for r in rows}


def answers_label(settings, cfg: LoopConfig, ds: int, number: int) -> int:
    """Answers for a round's samples from ``cfg.answers`` (by URI, else file name), stored as annotations
    of tool "answers": a person's labels in a file, which the loop reads for nothing else."""
    answers = read_answers(cfg.answers)

    def write(s):
        wanted = store_rounds.sample_ids(s, store_rounds.get(s, ds, number)).tolist()
        uris = store_samples.uris(s, wanted)
        got = {int(sid): answers.get(uri, answers.get(os.path.basename(uri))) for sid, uri in zip(wanted, uris)}
        missing = [uri for uri, sid in zip(uris, wanted) if got[int(sid)] is None]
        if missing:
            raise ValidationError(f"answers file {cfg.answers} has no label for {len(missing)} of round {number}'s "
                                  f"samples (first: {missing[0]}); key each line by the sample's URI or file name")
        classes = store_samples.class_list(s, ds).names
        unknown = sorted(set(got.values()) - set(classes)) if classes else []
        if unknown:
            raise ValidationError(f"answers file {cfg.answers} gives labels {unknown[:5]} that are not classes of "
                                  f"dataset {cfg.dataset!r} ({list(classes)[:20]}); fix the file or the class list")
        return add_annotations(s, "answers", got, annotator="answers-file")

    return run_step(settings, write=lambda s, _: write(s))


def oracle_label(settings, ds: int, number: int) -> int:
    """Ground-truth answers for a round's samples, stored as annotations of tool "oracle"."""

    def write(s):
        wanted = store_rounds.sample_ids(s, store_rounds.get(s, ds, number))
        truth = store_samples.truth(s, sample_ids=wanted)
        missing = [sid for sid, label in zip(truth.ids.tolist(), truth.labels) if label is None]
        if missing:
            raise ValidationError(
                f"the oracle labeler needs ground truth, and {len(missing)} selected samples have none; "
                "use --labeler labelstudio to have people label them"
            )
        return add_annotations(s, "oracle", dict(zip(truth.ids.tolist(), truth.labels)), annotator="oracle")

    return run_step(settings, write=lambda s, _: write(s))


def _recorded(s, round_id: int):
    """READ: the curve's point recorded under the round (whichever estimate it is), or None."""
    for metric in CURVE_METRICS:
        done = store_rounds.evaluation(s, round_id, metric)
        if done is not None:
            return done
    return None


def evaluate(settings, cfg: LoopConfig, ds: int, number: int):
    """Train on the labels as of round ``number`` and record the curve's point under that round, once.

    The point is the test error where the dataset has a ground-truth test split, else an estimate on
    the human labels (``curve_metric``: cross-validation or a held-out share, recorded as its metric).
    The round is the stored one, and so is the training set (``round_labels(upto=number)``): a
    run resumed after a kill files the point where an uninterrupted run would have. Returns
    (n_labels, error, model) where model is None when the point was already recorded (the loop
    then trains again only if it needs to select); the model is the one the next round selects with.
    """

    def read(s):
        round_id = store_rounds.get(s, ds, number).id
        done = _recorded(s, round_id)
        return round_id, done, (None if done is not None else _labels_read(s, cfg, ds, number))

    round_id, done, got = run_step(settings, read)
    if done is not None:
        return done.n_labels, done.value, None
    split = _split_labels(cfg.seed, *got)
    model = train(settings, cfg, split.train_ids, split.train_labels)
    if split.metric == TEST_METRIC:
        error = _test_error(settings, cfg, model)
    elif split.metric == HOLDOUT_METRIC:
        error = _error_on(settings, model, split.val_ids, split.val_labels)
    else:
        error = _cv_error(settings, cfg, split, number)
    run_step(settings, write=lambda s, _: store_rounds.add_evaluation(
        s, ds, round_id, model_id=model.model_id, n_labels=split.n_labels, metric=split.metric, value=error))
    return split.n_labels, error, model


def _error_on(settings, model, ids, labels) -> float:
    """Error of ``model`` on samples ``ids`` whose (human) labels are ``labels``."""
    from curator.rounds import predict_probs

    def compute(uris):
        index = {c: i for i, c in enumerate(model.classes)}
        y = np.array([index.get(str(x), -1) for x in labels])
        return float((predict_probs(model.adapter, uris).argmax(1) != y).mean())

    return run_step(settings, lambda s: store_samples.uris(s, ids), compute)


def cv_folds(labels, k: int, seed: int, number: int) -> np.ndarray:
    """COMPUTE: the fold of each label: stratified (each class dealt round the folds in a seeded order)."""
    n = len(labels)
    order = seeds.rng(seed, round=number, stage="cv-folds").permutation(n)
    order = sorted(order.tolist(), key=lambda j: str(labels[j]))  # stable: seeded order within each class
    folds = np.empty(n, dtype=np.int64)
    folds[order] = np.arange(n) % k
    return folds


def _cv_error(settings, cfg: LoopConfig, split: RoundLabels, number: int) -> float:
    """Out-of-fold error of ``CV_FOLDS`` models, each trained (the round's recipe and seed) on the other
    folds: every human label validates once."""
    n = len(split.train_ids)
    k = min(CV_FOLDS, n)
    if k < 2:
        raise ValidationError(f"round {number}: {n} label(s) cannot estimate an error by cross-validation; "
                              "start with --initial 2 or more")
    folds = cv_folds(split.train_labels, k, cfg.seed, number)
    ids, labels = np.asarray(split.train_ids), np.asarray(split.train_labels, dtype=object)
    wrong = 0.0
    for f in range(k):
        held = folds == f
        model = train(settings, cfg, ids[~held].tolist(), labels[~held].tolist())
        wrong += _error_on(settings, model, ids[held].tolist(), labels[held].tolist()) * int(held.sum())
    return wrong / n


#: Evaluation metric of the random-selection baseline (points at the loop's label counts).
BASELINE_METRIC = "test_error_random"


def random_baseline(settings, cfg: LoopConfig, ds: int) -> list[tuple[int, float]]:
    """Random selection on the same data: at each round's label count on the learning curve, the
    model trained (same recipe and seed) on round 0's samples plus pool samples taken in one random
    order, so the sets are nested as a real random run's would be, labeled with ground truth.
    Each point is recorded under its round, once; returns the whole baseline curve."""

    def read(s):
        curve = [(p.round_id, p.n_labels) for p in store_rounds.evaluations(s, ds, "test_error")
                 if p.round_id is not None]
        recorded = [(p.round_id, p.n_labels) for p in store_rounds.evaluations(s, ds, BASELINE_METRIC)]
        start = store_rounds.sample_ids(s, store_rounds.get(s, ds, 0)).tolist()
        return curve, recorded, start, _pool_truth(s, cfg, ds)

    curve, recorded, start, truth = run_step(settings, read)
    start = [int(i) for i in start]
    rest = np.array(sorted(set(truth) - set(start)), dtype=np.int64)
    order = seeds.rng(cfg.seed, stage="baseline").permutation(rest).tolist()
    done_rounds = {r for r, _ in recorded if r is not None}
    done_counts = {n for r, n in recorded if r is None}  # points of an older curator: by count only
    for round_id, n in curve:
        if round_id in done_rounds or n in done_counts or n < len(start) or n - len(start) > len(order):
            continue
        ids = sorted(start + order[: n - len(start)])  # the order the loop trains in
        model = train(settings, cfg, ids, [truth[i] for i in ids])
        error = _test_error(settings, cfg, model)
        run_step(settings, write=lambda s, _, round_id=round_id, n=n, model=model, error=error:
                 store_rounds.add_evaluation(s, ds, round_id, model_id=model.model_id, n_labels=n,
                                             metric=BASELINE_METRIC, value=error))
        done_rounds.add(round_id)
    points = run_step(settings, lambda s: store_rounds.evaluations(s, ds, BASELINE_METRIC))
    points.sort(key=lambda p: (p.n_labels, p.number is None, p.number or 0, p.id))
    return [(p.n_labels, p.value) for p in points]


#: Evaluation metric of the labels-only comparison: the loop's own labels, the built-in CNN without
#: the pool's pseudo-labels (``--supervised-only``); recorded beside the random baseline.
SUPERVISED_METRIC = "test_error_supervised"


def supervised_baseline(settings, cfg: LoopConfig, ds: int) -> list[tuple[int, float]]:
    """The loop's own labels at each round of the test-error curve, trained on the labels alone: the
    report shows what learning from the unlabeled pool adds (the random baseline shows what
    selection adds). Only for the built-in semi-supervised recipe; each point recorded once."""
    if cfg.model is not None or cfg.supervised_only:
        return []

    def read(s):
        curve = [(p.round_id, p.number) for p in store_rounds.evaluations(s, ds, TEST_METRIC)
                 if p.round_id is not None]
        recorded = {p.round_id for p in store_rounds.evaluations(s, ds, SUPERVISED_METRIC)}
        return [(r, n) for r, n in curve if r not in recorded]

    for round_id, number in run_step(settings, read):
        got = round_labels(settings, cfg, ds, upto=number)
        from curator import rounds

        model = rounds.train_model(settings, cfg.dataset, got.train_ids, got.train_labels, seed=cfg.seed,
                                   epochs=cfg.epochs, semi=None, split=cfg.pool_split)
        error = _test_error(settings, cfg, model)
        run_step(settings, write=lambda s, _, round_id=round_id, n=got.n_labels, model=model, error=error:
                 store_rounds.add_evaluation(s, ds, round_id, model_id=model.model_id, n_labels=n,
                                             metric=SUPERVISED_METRIC, value=error))
    points = run_step(settings, lambda s: store_rounds.evaluations(s, ds, SUPERVISED_METRIC))
    return [(p.n_labels, p.value) for p in points]


def _pool_truth(session, cfg: LoopConfig, ds: int) -> dict[int, str]:
    """Ground truth of every pool sample, or a clear error: the baseline's random picks need it."""
    truth = store_samples.truth(session, ds, split=cfg.pool_split, pool_only=True)
    if any(label is None for label in truth.labels):
        raise ValidationError(
            "a random baseline needs ground truth for the pool (it is a benchmark: random picks are "
            "labeled by the oracle); run without --baseline"
        )
    return dict(zip(truth.ids.tolist(), truth.labels))


def _test_error(settings, cfg: LoopConfig, model) -> float:
    """Error of ``model`` on the loop's held-out split."""
    from curator import rounds

    return rounds.test_error(settings, cfg.dataset, model, split=cfg.test_split)


def train(settings, cfg: LoopConfig, ids, labels):
    from curator import rounds

    if cfg.model is not None:  # the user's model: trained by its fit hook, else used frozen
        return rounds.train_own_model(settings, cfg.dataset, cfg.model, ids, labels, seed=cfg.seed,
                                      weights=cfg.weights)
    return rounds.train_model(settings, cfg.dataset, ids, labels, seed=cfg.seed, epochs=cfg.epochs,
                              semi=None if cfg.supervised_only else _semi_config(), split=cfg.pool_split)


def _semi_config():
    """The built-in recipe's semi-supervised settings (``curator.semihead.SemiConfig``)."""
    from curator.semihead import SemiConfig

    return SemiConfig()


def select_next(settings, cfg: LoopConfig, ds: int, model) -> int:
    """Score the pool, select a batch without near duplicates; return the new round's number."""
    from curator import rounds

    scored = rounds.score_pool(settings, cfg.dataset, model, split=cfg.pool_split, subsample=cfg.subsample,
                               seed=cfg.seed, mc_samples=rounds.mc_samples_for(model, cfg.policy, 20, explicit=False))
    budget = min(cfg.budget, len(scored.sample_ids))
    result = rounds.select_round(settings, cfg.dataset, model, budget=budget, policy=cfg.policy, seed=cfg.seed,
                                 split=cfg.pool_split, subsample=cfg.subsample, at_most=True, scored=scored)
    return result.number


def _project(cfg: LoopConfig) -> str:
    from curator.integrations.labelstudio.push import default_project_name

    return cfg.project or default_project_name(cfg.dataset)


def _round_samples(settings, ds: int, number: int) -> list[int]:
    return run_step(settings, lambda s: store_rounds.sample_ids(s, store_rounds.get(s, ds, number)).tolist())


def _answered(settings, wanted: list[int]) -> set[int]:
    """Those of ``wanted`` with a live (not deleted) annotation."""
    return run_step(settings, lambda s: annotated_sample_ids(s, wanted))


def push(settings, cfg: LoopConfig, ds: int, number: int) -> None:
    """Send the round to Label Studio (exactly once per sample, so a re-run is safe)."""
    if cfg.labeler in ("oracle", "answers"):
        return
    from curator.integrations.labelstudio.push import push as ls_push

    ls_push(settings, cfg.dataset, number, project=_project(cfg))


def label(settings, cfg: LoopConfig, ds: int, number: int) -> str | None:
    """Get the round labeled; return why not when labels are still missing."""
    if cfg.labeler == "oracle":
        oracle_label(settings, ds, number)
        return None
    if cfg.labeler == "answers":
        answers_label(settings, cfg, ds, number)
        return None
    from curator.integrations.labelstudio import oracle
    from curator.integrations.labelstudio.pull import pull

    wanted = _round_samples(settings, ds, number)
    if cfg.labeler == "labelstudio-oracle":
        pull(settings, _project(cfg))  # answers given before an interruption count once
        answered = _answered(settings, wanted)
        todo = [sid for sid in wanted if sid not in answered]
        if todo:
            oracle.annotate(settings, _project(cfg), sample_ids=todo)
    pull(settings, _project(cfg))
    answered = _answered(settings, wanted)
    missing = len(set(wanted) - answered)
    if missing:
        return (f"round {number}: {missing} of {len(wanted)} tasks still unlabeled in Label Studio project "
                f"{_project(cfg)!r}; run `curator loop` again when they are done")
    return None


def version(settings, cfg: LoopConfig, number: int) -> None:
    from curator import versions

    name = f"round-{number}"

    def write(s):
        if any(v.name == name for v in versions.versions_of(s, cfg.dataset)):
            return
        versions.create(s, name, dataset=cfg.dataset, message=f"labels after round {number} ({cfg.policy})",
                        split=[cfg.pool_split] if cfg.pool_split else None)

    run_step(settings, write=lambda s, _: write(s))


# -- the loop --------------------------------------------------------------------------------

def advance(settings, cfg: LoopConfig, ds: int, number: int, status: str | None = None) -> str | None:
    """Move round ``number`` from its recorded state (``status``, read when not given) to done;
    return why it stopped early."""
    from curator._progress import progress

    if status is None:
        status = run_step(settings, lambda s: store_rounds.get(s, ds, number).status)
    steps = STATES[STATES.index(status):] if status in STATES else STATES
    for state in progress(steps, total=len(steps), desc=f"round {number}"):
        if state == "selected":
            _boundary("push", number)
            push(settings, cfg, ds, number)
            _boundary("mark-pushed", number)
            _set_status(settings, ds, number, "pushed")
        elif state == "pushed":
            _boundary("label", number)
            waiting = label(settings, cfg, ds, number)
            if waiting:
                return waiting
            _boundary("mark-labeled", number)
            _set_status(settings, ds, number, "labeled")
        elif state == "labeled":
            _boundary("version", number)
            version(settings, cfg, number)
            _boundary("mark-versioned", number)
            _set_status(settings, ds, number, "versioned")
        elif state == "versioned":
            _boundary("mark-done", number)
            _set_status(settings, ds, number, "done")
    return None


def run_loop(settings, cfg: LoopConfig, *, report: bool = True, plots: bool = True) -> LoopResult:
    """Run (or resume) the loop until ``cfg.rounds`` rounds after the seed round are done.

    Round by round, each step reads the round's recorded state and does only what is missing:
    select (round 0: the seed set), push, label, version, evaluate, baseline. The report is
    rewritten after each round this run changed, and at the end if this run has not written it
    since its last change (a run killed before its report leaves nothing to redo in the database);
    ``plots=False`` writes its Markdown only.
    """
    cfg.check()
    _check_fault()
    def start(s):
        ds = dataset_id(s, cfg.dataset)
        if cfg.classes is not None:  # refused (nothing written) when the ground truth has other classes
            store_samples.declare_classes(s, ds, cfg.classes, dataset=cfg.dataset)
        if cfg.baseline:
            _pool_truth(s, cfg, ds)  # fail before any work
            if not count_with_truth(s, ds, cfg.test_split):
                raise ValidationError(f"a random baseline is measured on a test split with ground truth, and "
                                      f"split {cfg.test_split!r} has none; run without --baseline")
        return ds

    ds = run_step(settings, start)
    waiting = None
    model = None  # the model of the round before, when this process trained it
    stale, written = False, False  # the report: older than the database; written by this run
    number = 0
    for number in range(cfg.rounds + 1):
        rnd = run_step(settings, lambda s: store_rounds.find(s, ds, number))
        exists, status = rnd is not None, rnd.status if rnd is not None else None
        stale |= status != "done"
        if not exists and number == 0:
            _boundary("seed", number)
            seed_round(settings, cfg, ds)
        elif not exists:
            _boundary("select", number)
            if model is None:  # recorded by an earlier run: the same labels and seed train the same model
                labeled = round_labels(settings, cfg, ds, upto=number - 1)
                model = train(settings, cfg, labeled.train_ids, labeled.train_labels)
            selected = select_next(settings, cfg, ds, model)
            if selected != number:  # rounds numbered with gaps (deleted by hand): nothing to resume safely
                raise ValidationError(f"dataset {cfg.dataset!r}: the loop selected round {selected} where round "
                                      f"{number} was due; its rounds are not numbered 0, 1, 2, ... without gaps "
                                      f"(`curator report -d {cfg.dataset}` lists them)")
            status, exists = "selected", True  # recorded just now by this process
        waiting = advance(settings, cfg, ds, number, status if exists else None)
        if waiting:
            break
        _boundary("evaluate", number)
        n_labels, error, model = evaluate(settings, cfg, ds, number)
        stale |= model is not None
        log.info("round %d: %d labels, error %.4f", number, n_labels, error)
        if cfg.baseline:
            _boundary("baseline", number)
            before = _count(settings, ds, BASELINE_METRIC)
            random_baseline(settings, cfg, ds)
            stale |= _count(settings, ds, BASELINE_METRIC) != before
            before = _count(settings, ds, SUPERVISED_METRIC)
            supervised_baseline(settings, cfg, ds)
            stale |= _count(settings, ds, SUPERVISED_METRIC) != before
        if report and stale:
            _boundary("report", number)
            _report(settings, cfg, plots)
            stale, written = False, True
    if report and (stale or not written):
        _boundary("report", number)
        _report(settings, cfg, plots)

    def summary(s):
        points = [p for p in store_rounds.evaluations(s, ds) if p.metric in CURVE_METRICS]
        errors = [(p.n_labels, p.value) for p in points]
        done = sum(1 for r in store_rounds.list_rounds(s, ds) if r.status == "done" and r.number > 0)
        baseline = sorted(((p.n_labels, p.value) for p in store_rounds.evaluations(s, ds, BASELINE_METRIC)),
                          key=lambda e: e[0])
        return errors, done, baseline, len(_labeled(s, ds, cfg.pool_split, None)[0]), [p.metric for p in points]

    errors, done, baseline, n_labels, metrics = run_step(settings, summary)
    return LoopResult(rounds_done=done, n_labels=n_labels, errors=errors, waiting=waiting, baseline=baseline,
                      metrics=metrics)


def _count(settings, ds: int, metric: str) -> int:
    return run_step(settings, lambda s: len(store_rounds.evaluations(s, ds, metric)))


def _report(settings, cfg: LoopConfig, plots: bool = True) -> None:
    from curator.report import write_report

    write_report(settings, cfg.dataset, target=cfg.target_error, plots=plots)
