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
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from sqlalchemy import func, select

from curator.exceptions import ValidationError
from curator.store.models import Annotation, Evaluation, Round, RoundItem, Sample, utcnow
from curator.store.queries import agreed_labels, dataset_id
from curator.store.session import transaction

log = logging.getLogger(__name__)

LABELERS = ("oracle", "labelstudio-oracle", "labelstudio")
STATES = ("selected", "pushed", "labeled", "versioned", "done")


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

def _round(session, ds: int, number: int) -> Round | None:
    return session.scalar(select(Round).where(Round.dataset_id == ds, Round.number == number))


def _set_status(settings, ds: int, number: int, status: str) -> None:
    with transaction(settings) as s:
        rnd = _round(s, ds, number)
        rnd.status = status
        if status == "done":
            rnd.finished_at = utcnow()


def labeled_arrays(settings, ds: int, split: str | None) -> tuple[np.ndarray, list[str]]:
    """Sample ids and agreed labels of the labeled samples of ``split``."""
    with transaction(settings) as s:
        labels = agreed_labels(s, ds)
        q = select(Sample.id).where(Sample.dataset_id == ds, Sample.id.in_(list(labels)))
        if split:
            q = q.where(Sample.split == split)
        ids = np.array(sorted(s.scalars(q)), dtype=np.int64)
    return ids, [labels[int(i)][0] for i in ids]


# -- steps -----------------------------------------------------------------------------------

def seed_round(settings, cfg: LoopConfig, ds: int) -> None:
    """Round 0: ``initial`` samples balanced over ground-truth classes (random without it)."""
    rng = np.random.default_rng([cfg.seed, 0])
    with transaction(settings) as s:
        if _round(s, ds, 0) is not None:
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
        rnd = Round(dataset_id=ds, number=0, policy="seed-balanced", params={"initial": cfg.initial},
                    budget=cfg.initial, seed=cfg.seed, status="selected")
        s.add(rnd)
        s.flush()
        s.add_all(RoundItem(round_id=rnd.id, sample_id=sid, rank=i, score=None) for i, sid in enumerate(chosen))


def oracle_label(settings, ds: int, number: int) -> int:
    """Ground-truth answers for a round's samples, stored as annotations of tool "oracle"."""
    with transaction(settings) as s:
        rnd = _round(s, ds, number)
        rows = s.execute(
            select(Sample.id, Sample.gt_label).join(RoundItem, RoundItem.sample_id == Sample.id)
            .where(RoundItem.round_id == rnd.id)
        ).all()
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


def evaluate(settings, cfg: LoopConfig, ds: int, round_number: int | None):
    """Train on the current labels and record the test error (once per number of labels).

    Returns (n_labels, error, model) where model is None when the point was
    already recorded (the loop then trains again only if it needs to select).
    """
    from curator import rounds

    ids, labels = labeled_arrays(settings, ds, cfg.pool_split)
    with transaction(settings) as s:
        done = s.execute(select(Evaluation.value).where(
            Evaluation.dataset_id == ds, Evaluation.metric == "test_error", Evaluation.n_labels == len(ids))).first()
    if done is not None:
        return len(ids), float(done[0]), None
    model = train(settings, cfg, ids, labels)
    error = _test_error(settings, cfg, model)
    with transaction(settings) as s:
        rnd = _round(s, ds, round_number) if round_number is not None else None
        s.add(Evaluation(dataset_id=ds, round_id=rnd.id if rnd else None, model_id=model.model_id,
                         n_labels=len(ids), metric="test_error", value=error))
    return len(ids), error, model


#: Evaluation metric of the random-selection baseline (points at the loop's label counts).
BASELINE_METRIC = "test_error_random"


def random_baseline(settings, cfg: LoopConfig, ds: int) -> list[tuple[int, float]]:
    """Random selection on the same data: at each label count of the learning curve, the model
    trained (same recipe and seed) on round 0's samples plus pool samples taken in one random
    order, so the sets are nested as a real random run's would be, labeled with ground truth.
    Points already recorded are kept; returns the whole baseline curve."""
    with transaction(settings) as s:
        curve = sorted(set(s.scalars(select(Evaluation.n_labels).where(
            Evaluation.dataset_id == ds, Evaluation.metric == "test_error"))))
        have = dict(s.execute(select(Evaluation.n_labels, Evaluation.value).where(
            Evaluation.dataset_id == ds, Evaluation.metric == BASELINE_METRIC)).all())
        start = s.scalars(select(RoundItem.sample_id).where(RoundItem.round_id == _round(s, ds, 0).id)
                          .order_by(RoundItem.rank)).all()
        truth = _pool_truth(s, cfg, ds)
    start = [int(i) for i in start]
    rest = np.array(sorted(set(truth) - set(start)), dtype=np.int64)
    order = np.random.default_rng([cfg.seed, 7]).permutation(rest).tolist()
    for n in curve:
        if n in have or n < len(start) or n - len(start) > len(order):
            continue
        ids = sorted(start + order[: n - len(start)])  # the order the loop trains in
        model = train(settings, cfg, ids, [truth[i] for i in ids])
        error = _test_error(settings, cfg, model)
        with transaction(settings) as s:
            s.add(Evaluation(dataset_id=ds, round_id=None, model_id=model.model_id, n_labels=n,
                             metric=BASELINE_METRIC, value=error))
        have[n] = error
    return sorted(have.items())


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


def _round_samples(settings, ds: int, number: int) -> tuple[int, list[int]]:
    with transaction(settings) as s:
        rnd = _round(s, ds, number)
        ids = s.scalars(select(RoundItem.sample_id).where(RoundItem.round_id == rnd.id)
                        .order_by(RoundItem.rank)).all()
        return rnd.id, list(ids)


def push(settings, cfg: LoopConfig, ds: int, number: int) -> None:
    """Send the round to Label Studio (exactly once per sample, so a re-run is safe)."""
    if cfg.labeler == "oracle":
        return
    from curator.integrations.labelstudio.push import push as ls_push

    round_id, _ = _round_samples(settings, ds, number)
    ls_push(settings, round_id, project=_project(cfg))


def label(settings, cfg: LoopConfig, ds: int, number: int) -> str | None:
    """Get the round labeled; return why not when labels are still missing."""
    if cfg.labeler == "oracle":
        oracle_label(settings, ds, number)
        return None
    from curator.integrations.labelstudio import oracle
    from curator.integrations.labelstudio.pull import pull

    _, wanted = _round_samples(settings, ds, number)
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
        status = _round(s, ds, number).status
    steps = STATES[STATES.index(status):] if status in STATES else STATES
    for state in progress(steps, total=len(steps), desc=f"round {number}"):
        if state == "selected":
            push(settings, cfg, ds, number)
            _set_status(settings, ds, number, "pushed")
        elif state == "pushed":
            waiting = label(settings, cfg, ds, number)
            if waiting:
                return waiting
            _set_status(settings, ds, number, "labeled")
        elif state == "labeled":
            version(settings, cfg, number)
            _set_status(settings, ds, number, "versioned")
        elif state == "versioned":
            _set_status(settings, ds, number, "done")
    return None


def run_loop(settings, cfg: LoopConfig, *, report: bool = True) -> LoopResult:
    """Run (or resume) the loop until ``cfg.rounds`` rounds after the seed round are done."""
    cfg.check()
    with transaction(settings) as s:
        ds = dataset_id(s, cfg.dataset)
        if cfg.baseline:
            _pool_truth(s, cfg, ds)  # fail before any work
    seed_round(settings, cfg, ds)
    number = 0
    waiting = None
    while True:
        waiting = advance(settings, cfg, ds, number)
        if waiting:
            break
        n_labels, error, model = evaluate(settings, cfg, ds, number)
        log.info("round %d: %d labels, test error %.4f", number, n_labels, error)
        if cfg.baseline:
            random_baseline(settings, cfg, ds)
        if report:
            _report(settings, cfg)
        if number >= cfg.rounds:
            break
        with transaction(settings) as s:
            nxt = _round(s, ds, number + 1)
        if nxt is None:
            if model is None:
                ids, labels = labeled_arrays(settings, ds, cfg.pool_split)
                model = train(settings, cfg, ids, labels)
            select_next(settings, cfg, ds, model)
        number += 1
    with transaction(settings) as s:
        errors = s.execute(select(Evaluation.n_labels, Evaluation.value).where(
            Evaluation.dataset_id == ds, Evaluation.metric == "test_error").order_by(Evaluation.n_labels)).all()
        done = s.scalar(select(func.count()).select_from(Round).where(
            Round.dataset_id == ds, Round.status == "done", Round.number > 0))
        baseline = s.execute(select(Evaluation.n_labels, Evaluation.value).where(
            Evaluation.dataset_id == ds, Evaluation.metric == BASELINE_METRIC).order_by(Evaluation.n_labels)).all()
    ids, _ = labeled_arrays(settings, ds, cfg.pool_split)
    return LoopResult(rounds_done=done, n_labels=len(ids), errors=[tuple(e) for e in errors], waiting=waiting,
                      baseline=[tuple(e) for e in baseline])


def _report(settings, cfg: LoopConfig) -> None:
    from curator.report import write_report

    write_report(settings, cfg.dataset, target=cfg.target_error)
