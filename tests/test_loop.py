"""The loop end to end: oracle labels, resume after a kill, and the real Label Studio server.

tests/test_loop_resume.py kills the loop at every step boundary; here the issue's
case runs through the CLI: killed after a round is labeled, before it is evaluated.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from curator.ingest import ingest_arrays
from curator.ingest.idx import iter_images, read_labels
from curator.loop import LoopConfig, run_loop
from curator.store.schema import Annotation, Evaluation, LabelVersion, Round, RoundItem
from curator.store.session import transaction

from conftest import ROOT, SAMPLE

N_TRAIN, N_TEST = 400, 300


def small_dataset(settings, name="loopdata", n_train=N_TRAIN, n_test=N_TEST):
    """Real 16x16 MNIST digits: a 400-image pool and a 300-image test split (by default)."""
    for split, n in (("train", n_train), ("test", n_test)):
        _, images = next(iter_images(SAMPLE / f"{split}-images-idx3-ubyte.gz", batch_size=n))
        labels = read_labels(SAMPLE / f"{split}-labels-idx1-ubyte.gz")[:n]
        ingest_arrays(images, labels, dataset=name, split=split, name=split, settings=settings)
    return name


def config(name, **kw):
    return LoopConfig(dataset=name, rounds=2, budget=8, initial=20, subsample=None, **kw)


def counts(settings):
    with transaction(settings) as s:
        return {
            "rounds": s.scalar(select(func.count()).select_from(Round)),
            "items": s.scalar(select(func.count()).select_from(RoundItem)),
            "annotations": s.scalar(select(func.count()).select_from(Annotation)),
            "versions": s.scalars(select(LabelVersion.name).order_by(LabelVersion.id)).all(),
            "evaluations": s.execute(select(Round.number, Evaluation.n_labels, Evaluation.value)
                                     .join(Round, Round.id == Evaluation.round_id)
                                     .where(Evaluation.metric == "test_error")
                                     .order_by(Evaluation.n_labels)).all(),
            "status": s.scalars(select(Round.status).order_by(Round.number)).all(),
        }


@pytest.mark.slow
def test_oracle_loop_runs_rounds_records_everything_and_reports(settings):
    name = small_dataset(settings)
    result = run_loop(settings, config(name))
    assert result.rounds_done == 2 and result.n_labels == 20 + 2 * 8 and result.waiting is None
    c = counts(settings)
    assert c["status"] == ["done"] * 3 and c["items"] == 36 and c["annotations"] == 36
    assert c["versions"] == ["round-0", "round-1", "round-2"]
    assert [(r, n) for r, n, _ in c["evaluations"]] == [(0, 20), (1, 28), (2, 36)]
    # chance is 0.9 with 10 classes: 20 to 36 labels of these digits give about 0.4-0.5 (measured:
    # 0.52, 0.41, 0.42 on the 300 test images), and more labels a lower error than the seed set's
    errors = [e for _, _, e in c["evaluations"]]
    assert all(0 <= e < 0.65 for e in errors) and errors[-1] < errors[0], errors
    with transaction(settings) as s:  # every selected sample is distinct across rounds
        sids = s.scalars(select(RoundItem.sample_id)).all()
        assert len(set(sids)) == len(sids)
        policies = s.scalars(select(Round.policy).order_by(Round.number)).all()
        assert policies == ["seed-balanced", "curator", "curator"]
    report = settings.workspace / "reports" / name / "report.md"
    assert report.exists() and (report.parent / "report.png").stat().st_size > 10_000
    text = report.read_text()
    assert "| 2 | 36 |" in text and "Forecast" in text
    # running it again does nothing new
    again = run_loop(settings, config(name))
    assert again.rounds_done == 2 and counts(settings) == c


@pytest.mark.slow
def test_random_baseline_at_every_label_count_in_the_report(settings):
    from curator.loop import BASELINE_METRIC, SUPERVISED_METRIC, random_baseline, supervised_baseline

    # the bookkeeping, not the error: a small pool and a one-epoch recipe (equal models still need equal inputs)
    name = small_dataset(settings, "baselined", n_train=120, n_test=60)
    result = run_loop(settings, config(name, baseline=True, epochs=1))
    loop_errors = dict(result.errors)
    random = dict(result.baseline)
    assert sorted(random) == sorted(loop_errors) == [20, 28, 36]
    assert random[20] == loop_errors[20]  # the same start set, recipe and seed: the same model
    with transaction(settings) as s:  # random picks are pool samples, never the loop's later rounds' choice
        stored = s.execute(select(Evaluation.n_labels).where(Evaluation.metric == BASELINE_METRIC)).all()
        ds = s.scalar(select(Round.dataset_id))
    assert len(stored) == 3
    assert random_baseline(settings, config(name, baseline=True, epochs=1), ds) == sorted(random.items())  # nothing new
    text = (settings.workspace / "reports" / name / "report.md").read_text()
    # beside it the same labels without the pool (`--supervised-only`): the gain of semi-supervised training
    with transaction(settings) as s:
        sup = dict(s.execute(select(Evaluation.n_labels, Evaluation.value)
                             .where(Evaluation.metric == SUPERVISED_METRIC)).all())
    assert sorted(sup) == [20, 28, 36] and all(0 <= v <= 1 for v in sup.values())  # a one-epoch recipe: bookkeeping only
    assert "| random selection | labels only (`--supervised-only`) |" in text
    assert f"| 2 | 36 | {loop_errors[36]:.4f} | {random[36]:.4f} | {sup[36]:.4f} |" in text
    assert f"against {sup[36]:.2%} from the same labels alone" in text
    assert "Semi-supervised (model" in text  # the training line names the loop's model, not the comparison's
    assert supervised_baseline(settings, config(name, baseline=True), ds) == sorted(sup.items())  # nothing new
    assert supervised_baseline(settings, config(name, baseline=True, supervised_only=True), ds) == []


def test_random_baseline_needs_ground_truth(settings):
    from curator.exceptions import ValidationError

    _, images = next(iter_images(SAMPLE / "train-images-idx3-ubyte.gz", batch_size=40))
    ingest_arrays(images, None, dataset="nogt", split="train", name="train", settings=settings)
    with pytest.raises(ValidationError, match="random baseline needs ground truth"):
        run_loop(settings, LoopConfig(dataset="nogt", rounds=0, initial=20, labeler="oracle", baseline=True))


@pytest.mark.slow
def test_loop_killed_after_a_round_is_labeled_files_its_evaluation_under_that_round(db_settings):
    """`curator loop` killed (CURATOR_FAULT_AT, exit 137 as under kill -9) after round 1 is labeled
    and versioned, before it is evaluated: the resumed run evaluates round 1 under round 1 (it used
    to file it under round 0), redoes nothing finished, and the report shows the right rounds."""
    from curator.loop import FAULT_ENV

    name = small_dataset(db_settings, n_train=120, n_test=60)  # the bookkeeping needs 36 pool samples
    env = {**os.environ, "CURATOR_WORKSPACE": str(db_settings.workspace), "CURATOR_DB_URL": db_settings.database_url,
           "CURATOR_PROGRESS": "0", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "curator", "loop", "-d", name, "--rounds", "2", "--budget", "8", "--subsample", "0",
            "--epochs", "1"]  # which round an evaluation is filed under does not depend on the recipe
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env={**env, FAULT_ENV: "evaluate:1"})
    assert proc.returncode == 137, proc.stderr
    before = counts(db_settings)
    assert before["status"] == ["done", "done"]  # round 1 labeled, versioned and done, not evaluated
    assert before["versions"] == ["round-0", "round-1"] and before["annotations"] == 28
    assert [(r, n) for r, n, _ in before["evaluations"]] == [(0, 20)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    after = counts(db_settings)
    assert after["status"] == ["done"] * 3 and after["versions"] == ["round-0", "round-1", "round-2"]
    assert after["annotations"] == 36 and after["items"] == 36  # round 1's labels were kept, not asked again
    assert [(r, n) for r, n, _ in after["evaluations"]] == [(0, 20), (1, 28), (2, 36)]
    assert after["evaluations"][0] == before["evaluations"][0]  # finished work not redone
    text = (db_settings.workspace / "reports" / name / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.count("|") == 4][1:]
    assert [row.split(" | ")[:2] for row in rows] == [["| 0", "20"], ["| 1", "28"], ["| 2", "36"]]


@pytest.mark.slow
@pytest.mark.labelstudio
def test_two_rounds_against_real_label_studio_with_oracle(ls_server, tmp_path):
    from curator.integrations.labelstudio import TOOL
    from curator.store.schema import TaskLink

    settings = dataclasses.replace(ls_server, db_url=f"sqlite:///{tmp_path / 'loop.db'}")
    name = small_dataset(settings, name=f"loop{tmp_path.name[-6:].replace('-', '')}")
    cfg = config(name, labeler="labelstudio-oracle", project=f"loop-{tmp_path.name[-8:]}")
    result = run_loop(settings, cfg)
    assert result.rounds_done == 2 and result.waiting is None
    c = counts(settings)
    assert c["status"] == ["done"] * 3 and c["annotations"] == 36
    with transaction(settings) as s:
        links = s.scalar(select(func.count()).select_from(TaskLink).where(TaskLink.tool == TOOL))
        tools = set(s.scalars(select(Annotation.tool)))
    assert links == 36 and tools == {TOOL}
    # a re-run pushes nothing twice and stores nothing twice
    run_loop(settings, cfg)
    assert counts(settings)["annotations"] == 36
