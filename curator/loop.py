"""The continuous-improvement loop: train, score, de-duplicate, select, label, version, evaluate.

Each round moves through states recorded on its ``rounds`` row:

    selected -> pushed -> labeled -> versioned -> done

and every step is idempotent, so ``run_loop`` called again after an
interruption (a killed process, a server restart, labelers not finished yet)
continues from the recorded state without repeating finished work or losing
labels. Round 0 is the seed set (balanced by ground truth when it exists).

Labelers: ``"oracle"`` answers from ground truth inside the database (demos
without a server); ``"labelstudio-oracle"`` pushes to a real Label Studio
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
from curator.store.queries import add_annotations, agreed_labels, annotated_sample_ids, dataset_id

log = logging.getLogger(__name__)

LABELERS = ("oracle", "labelstudio-oracle", "labelstudio")
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

    def check(self) -> None:
        if self.labeler not in LABELERS:
            raise ValidationError(f"labeler must be one of {', '.join(LABELERS)}; got {self.labeler!r}")
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


def seed_round(settings, cfg: LoopConfig, ds: int) -> None:
    """Round 0: ``initial`` samples balanced over ground-truth classes (random without it)."""

    def read(s):
        if store_rounds.find(s, ds, 0) is not None:
            return None
        return store_samples.truth(s, ds, split=cfg.pool_split, pool_only=True)

    def compute(truth):
        if truth is None:
            return None
        if len(truth) < cfg.initial:
            raise ValidationError(
                f"dataset has {len(truth)} pool samples in split {cfg.pool_split!r}, fewer than initial={cfg.initial}"
            )
        return _balanced(truth, cfg.initial, cfg.seed)

    def write(s, chosen):
        if chosen is None:
            return
        try:
            store_rounds.create(s, ds, chosen, np.full(len(chosen), np.nan), number=0, policy="seed-balanced",
                                params={"initial": cfg.initial}, budget=cfg.initial, seed=cfg.seed, model_id=None)
        except store_rounds.SamplesTaken:
            if store_rounds.find(s, ds, 0) is not None:  # another run of the loop recorded it meanwhile
                return
            raise ValidationError(
                f"dataset {cfg.dataset!r}: the loop's seed round 0 would take samples that a round selected "
                "outside the loop still holds; finish (label) that round first, or run the loop on a fresh dataset"
            ) from None

    run_step(settings, read, compute, write)


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


def evaluate(settings, cfg: LoopConfig, ds: int, number: int):
    """Train on the labels as of round ``number`` and record the test error under that round, once.

    The round is the stored one, and so is the training set (``labeled_arrays(upto=number)``): a
    run resumed after a kill files the point where an uninterrupted run would have. Returns
    (n_labels, error, model) where model is None when the point was already recorded (the loop
    then trains again only if it needs to select).
    """

    def read(s):
        round_id = store_rounds.get(s, ds, number).id
        done = store_rounds.evaluation(s, round_id, "test_error")
        return round_id, done, (None if done is not None else _labeled(s, ds, cfg.pool_split, number))

    round_id, done, labeled = run_step(settings, read)
    if done is not None:
        return done.n_labels, done.value, None
    ids, labels = labeled
    model = train(settings, cfg, ids, labels)
    error = _test_error(settings, cfg, model)
    run_step(settings, write=lambda s, _: store_rounds.add_evaluation(
        s, ds, round_id, model_id=model.model_id, n_labels=len(ids), metric="test_error", value=error))
    return len(ids), error, model


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
    return rounds.train_model(settings, cfg.dataset, ids, labels, seed=cfg.seed, epochs=cfg.epochs)


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
    if cfg.labeler == "oracle":
        return
    from curator.integrations.labelstudio.push import push as ls_push

    ls_push(settings, cfg.dataset, number, project=_project(cfg))


def label(settings, cfg: LoopConfig, ds: int, number: int) -> str | None:
    """Get the round labeled; return why not when labels are still missing."""
    if cfg.labeler == "oracle":
        oracle_label(settings, ds, number)
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
        if cfg.baseline:
            _pool_truth(s, cfg, ds)  # fail before any work
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
                ids, labels = labeled_arrays(settings, ds, cfg.pool_split, upto=number - 1)
                model = train(settings, cfg, ids, labels)
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
        log.info("round %d: %d labels, test error %.4f", number, n_labels, error)
        if cfg.baseline:
            _boundary("baseline", number)
            before = _count(settings, ds, BASELINE_METRIC)
            random_baseline(settings, cfg, ds)
            stale |= _count(settings, ds, BASELINE_METRIC) != before
        if report and stale:
            _boundary("report", number)
            _report(settings, cfg, plots)
            stale, written = False, True
    if report and (stale or not written):
        _boundary("report", number)
        _report(settings, cfg, plots)

    def summary(s):
        errors = [(p.n_labels, p.value) for p in store_rounds.evaluations(s, ds, "test_error")]
        done = sum(1 for r in store_rounds.list_rounds(s, ds) if r.status == "done" and r.number > 0)
        baseline = sorted(((p.n_labels, p.value) for p in store_rounds.evaluations(s, ds, BASELINE_METRIC)),
                          key=lambda e: e[0])
        return errors, done, baseline, len(_labeled(s, ds, cfg.pool_split, None)[0])

    errors, done, baseline, n_labels = run_step(settings, summary)
    return LoopResult(rounds_done=done, n_labels=n_labels, errors=errors, waiting=waiting, baseline=baseline)


def _count(settings, ds: int, metric: str) -> int:
    return run_step(settings, lambda s: len(store_rounds.evaluations(s, ds, metric)))


def _report(settings, cfg: LoopConfig, plots: bool = True) -> None:
    from curator.report import write_report

    write_report(settings, cfg.dataset, target=cfg.target_error, plots=plots)
