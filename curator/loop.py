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
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
from sqlalchemy import func, select

from curator import seeds
from curator.exceptions import ValidationError
from curator.store import rounds as store_rounds
from curator.store.schema import Annotation, Evaluation, Round, Sample
from curator.store.queries import agreed_labels, dataset_id
from curator.store.session import transaction

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
    with transaction(settings) as s:
        store_rounds.set_status(s, ds, number, status)


def labeled_arrays(settings, ds: int, split: str | None, upto: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Sample ids and agreed labels of the labeled samples of ``split``; with ``upto``, as of round
    ``upto``: without the samples of later rounds, whenever (and however often) it is asked."""
    with transaction(settings) as s:
        labels = agreed_labels(s, ds)
        if upto is not None:
            later = set(store_rounds.sample_ids_after(s, ds, upto).tolist())
            labels = {k: v for k, v in labels.items() if k not in later}
        q = select(Sample.id).where(Sample.dataset_id == ds, Sample.id.in_(list(labels)))
        if split:
            q = q.where(Sample.split == split)
        ids = np.array(sorted(s.scalars(q)), dtype=np.int64)
    return ids, [labels[int(i)][0] for i in ids]


# -- steps -----------------------------------------------------------------------------------

def seed_round(settings, cfg: LoopConfig, ds: int) -> None:
    """Round 0: ``initial`` samples balanced over ground-truth classes (random without it)."""
    rng = seeds.rng(cfg.seed, round=0, stage="seed-set")
    with transaction(settings) as s:
        if store_rounds.find(s, ds, 0) is not None:
            return
        q = select(Sample.id, Sample.gt_label).where(Sample.dataset_id == ds, Sample.duplicate_of_id.is_(None))
        if cfg.pool_split:
            q = q.where(Sample.split == cfg.pool_split)
        rows = s.execute(q.order_by(Sample.id)).all()
        if len(rows) < cfg.initial:
            raise ValidationError(
                f"dataset has {len(rows)} pool samples in split {cfg.pool_split!r}, fewer than initial={cfg.initial}"
            )
        by_class: dict[str | None, list[int]] = {}
        for sid, label in rows:
            by_class.setdefault(label, []).append(sid)
        for members in by_class.values():
            rng.shuffle(members)
        chosen: list[int] = []
        classes = sorted(by_class, key=str)
        while len(chosen) < cfg.initial:
            for c in classes:
                if by_class[c] and len(chosen) < cfg.initial:
                    chosen.append(by_class[c].pop())
        try:
            store_rounds.create(s, ds, chosen, np.full(len(chosen), np.nan), number=0, policy="seed-balanced",
                                params={"initial": cfg.initial}, budget=cfg.initial, seed=cfg.seed, model_id=None)
        except store_rounds.SamplesTaken:
            raise ValidationError(
                f"dataset {cfg.dataset!r}: the loop's seed round 0 would take samples that a round selected "
                "outside the loop still holds; finish (label) that round first, or run the loop on a fresh dataset"
            ) from None


def oracle_label(settings, ds: int, number: int) -> int:
    """Ground-truth answers for a round's samples, stored as annotations of tool "oracle"."""
    with transaction(settings) as s:
        wanted = store_rounds.sample_ids(s, store_rounds.get(s, ds, number)).tolist()
        rows = s.execute(select(Sample.id, Sample.gt_label).where(Sample.id.in_(wanted))).all()
        missing = [sid for sid, label in rows if label is None]
        if missing:
            raise ValidationError(
                f"the oracle labeler needs ground truth, and {len(missing)} selected samples have none; "
                "use --labeler labelstudio to have people label them"
            )
        done = set(s.scalars(select(Annotation.sample_id).where(
            Annotation.tool == "oracle", Annotation.sample_id.in_([sid for sid, _ in rows]))))
        new = [Annotation(sample_id=sid, tool="oracle", external_id=f"oracle-{sid}", annotator="oracle",
                          label=label, skipped=False) for sid, label in rows if sid not in done]
        s.add_all(new)
        return len(new)


def _evaluation(session, round_id: int, metric: str) -> tuple[int, float] | None:
    row = session.execute(select(Evaluation.n_labels, Evaluation.value).where(
        Evaluation.round_id == round_id, Evaluation.metric == metric).order_by(Evaluation.id)).first()
    return (int(row[0]), float(row[1])) if row is not None else None


def evaluate(settings, cfg: LoopConfig, ds: int, number: int):
    """Train on the labels as of round ``number`` and record the test error under that round, once.

    The round is the stored one, and so is the training set (``labeled_arrays(upto=number)``): a
    run resumed after a kill files the point where an uninterrupted run would have. Returns
    (n_labels, error, model) where model is None when the point was already recorded (the loop
    then trains again only if it needs to select).
    """
    with transaction(settings) as s:
        round_id = store_rounds.get(s, ds, number).id
        done = _evaluation(s, round_id, "test_error")
    if done is not None:
        return done[0], done[1], None
    ids, labels = labeled_arrays(settings, ds, cfg.pool_split, upto=number)
    model = train(settings, cfg, ids, labels)
    error = _test_error(settings, cfg, model)
    with transaction(settings) as s:
        if _evaluation(s, round_id, "test_error") is None:
            s.add(Evaluation(dataset_id=ds, round_id=round_id, model_id=model.model_id,
                             n_labels=len(ids), metric="test_error", value=error))
    return len(ids), error, model


#: Evaluation metric of the random-selection baseline (points at the loop's label counts).
BASELINE_METRIC = "test_error_random"


def random_baseline(settings, cfg: LoopConfig, ds: int) -> list[tuple[int, float]]:
    """Random selection on the same data: at each round's label count on the learning curve, the
    model trained (same recipe and seed) on round 0's samples plus pool samples taken in one random
    order, so the sets are nested as a real random run's would be, labeled with ground truth.
    Each point is recorded under its round, once; returns the whole baseline curve."""
    with transaction(settings) as s:
        curve = s.execute(select(Evaluation.round_id, Evaluation.n_labels)
                          .join(Round, Round.id == Evaluation.round_id)
                          .where(Evaluation.dataset_id == ds, Evaluation.metric == "test_error")
                          .order_by(Round.number, Evaluation.id)).all()
        recorded = s.execute(select(Evaluation.round_id, Evaluation.n_labels).where(
            Evaluation.dataset_id == ds, Evaluation.metric == BASELINE_METRIC)).all()
        start = store_rounds.sample_ids(s, store_rounds.get(s, ds, 0)).tolist()
        truth = _pool_truth(s, cfg, ds)
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
        with transaction(settings) as s:
            if _evaluation(s, round_id, BASELINE_METRIC) is None:
                s.add(Evaluation(dataset_id=ds, round_id=round_id, model_id=model.model_id, n_labels=n,
                                 metric=BASELINE_METRIC, value=error))
        done_rounds.add(round_id)
    with transaction(settings) as s:
        return [(int(n), float(v)) for n, v in s.execute(
            select(Evaluation.n_labels, Evaluation.value)
            .outerjoin(Round, Round.id == Evaluation.round_id)
            .where(Evaluation.dataset_id == ds, Evaluation.metric == BASELINE_METRIC)
            .order_by(Evaluation.n_labels, Round.number, Evaluation.id)).all()]


def _pool_truth(session, cfg: LoopConfig, ds: int) -> dict[int, str]:
    """Ground truth of every pool sample, or a clear error: the baseline's random picks need it."""
    q = select(Sample.id, Sample.gt_label).where(Sample.dataset_id == ds, Sample.duplicate_of_id.is_(None))
    if cfg.pool_split:
        q = q.where(Sample.split == cfg.pool_split)
    truth = dict(session.execute(q.order_by(Sample.id)).all())
    if any(label is None for label in truth.values()):
        raise ValidationError(
            "a random baseline needs ground truth for the pool (it is a benchmark: random picks are "
            "labeled by the oracle); run without --baseline"
        )
    return truth


def _test_error(settings, cfg: LoopConfig, model) -> float:
    """Error of ``model`` on the loop's held-out split."""
    from curator import rounds

    return rounds.test_error(settings, cfg.dataset, model, split=cfg.test_split)


def train(settings, cfg: LoopConfig, ids, labels):
    from curator import rounds

    return rounds.train_model(settings, cfg.dataset, ids, labels, seed=cfg.seed, epochs=cfg.epochs)


def select_next(settings, cfg: LoopConfig, ds: int, model) -> int:
    """Score the pool, select a batch without near duplicates; return the new round's number."""
    from curator import rounds

    scored = rounds.score_pool(settings, cfg.dataset, model, split=cfg.pool_split,
                               subsample=cfg.subsample, seed=cfg.seed)
    budget = min(cfg.budget, len(scored.sample_ids))
    result = rounds.select_round(settings, cfg.dataset, model, budget=budget, policy=cfg.policy, seed=cfg.seed,
                                 split=cfg.pool_split, subsample=cfg.subsample, at_most=True, scored=scored)
    return result.number


def _project(cfg: LoopConfig) -> str:
    from curator.integrations.labelstudio.push import default_project_name

    return cfg.project or default_project_name(cfg.dataset)


def _round_samples(settings, ds: int, number: int) -> list[int]:
    with transaction(settings) as s:
        return store_rounds.sample_ids(s, store_rounds.get(s, ds, number)).tolist()


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
        with transaction(settings) as s:
            answered = set(s.scalars(select(Annotation.sample_id).where(
                Annotation.sample_id.in_(wanted), Annotation.deleted.is_(False))))
        todo = [sid for sid in wanted if sid not in answered]
        if todo:
            oracle.annotate(settings, _project(cfg), sample_ids=todo)
    pull(settings, _project(cfg))
    with transaction(settings) as s:
        answered = set(s.scalars(select(Annotation.sample_id).where(
            Annotation.sample_id.in_(wanted), Annotation.deleted.is_(False))))
    missing = len(set(wanted) - answered)
    if missing:
        return (f"round {number}: {missing} of {len(wanted)} tasks still unlabeled in Label Studio project "
                f"{_project(cfg)!r}; run `curator loop` again when they are done")
    return None


def version(settings, cfg: LoopConfig, number: int) -> None:
    from curator import versions

    name = f"round-{number}"
    with transaction(settings) as s:
        if any(v.name == name for v in versions.versions_of(s, cfg.dataset)):
            return
        versions.create(s, name, dataset=cfg.dataset, message=f"labels after round {number} ({cfg.policy})",
                        split=[cfg.pool_split] if cfg.pool_split else None)


# -- the loop --------------------------------------------------------------------------------

def advance(settings, cfg: LoopConfig, ds: int, number: int) -> str | None:
    """Move round ``number`` from its recorded state to done; return why it stopped early."""
    from curator._progress import progress

    with transaction(settings) as s:
        status = store_rounds.get(s, ds, number).status
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
    with transaction(settings) as s:
        ds = dataset_id(s, cfg.dataset)
        if cfg.baseline:
            _pool_truth(s, cfg, ds)  # fail before any work
    waiting = None
    model = None  # the model of the round before, when this process trained it
    stale, written = False, False  # the report: older than the database; written by this run
    number = 0
    for number in range(cfg.rounds + 1):
        with transaction(settings) as s:
            rnd = store_rounds.find(s, ds, number)
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
        waiting = advance(settings, cfg, ds, number)
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
    with transaction(settings) as s:
        errors = s.execute(select(Evaluation.n_labels, Evaluation.value)
                           .outerjoin(Round, Round.id == Evaluation.round_id)
                           .where(Evaluation.dataset_id == ds, Evaluation.metric == "test_error")
                           .order_by(Round.number.is_(None), Round.number, Evaluation.n_labels, Evaluation.id)).all()
        done = sum(1 for r in store_rounds.list_rounds(s, ds) if r.status == "done" and r.number > 0)
        baseline = s.execute(select(Evaluation.n_labels, Evaluation.value).where(
            Evaluation.dataset_id == ds, Evaluation.metric == BASELINE_METRIC).order_by(Evaluation.n_labels)).all()
    ids, _ = labeled_arrays(settings, ds, cfg.pool_split)
    return LoopResult(rounds_done=done, n_labels=len(ids), errors=[tuple(e) for e in errors], waiting=waiting,
                      baseline=[tuple(e) for e in baseline])


def _count(settings, ds: int, metric: str) -> int:
    with transaction(settings) as s:
        return s.scalar(select(func.count()).select_from(Evaluation).where(
            Evaluation.dataset_id == ds, Evaluation.metric == metric))


def _report(settings, cfg: LoopConfig, plots: bool = True) -> None:
    from curator.report import write_report

    write_report(settings, cfg.dataset, target=cfg.target_error, plots=plots)
