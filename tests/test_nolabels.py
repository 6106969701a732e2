"""Pools with no labels (issue 15 item 4): declared classes, a loop with no ground truth at all.

The pool is ingested WITHOUT labels; its labels live in an answers file that only the
``answers`` labeler reads (as a person would answer), so the loop cannot see ground
truth: round 0 is chosen by ``typical`` on the cold-start embedding, the curve is a
validation estimate on the human labels, and the report says so.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from sqlalchemy import func, select

from curator.ingest import ingest_arrays
from curator.ingest.idx import iter_images, read_labels
from curator.loop import CV_METRIC, HOLDOUT_METRIC, TEST_METRIC, LoopConfig, run_loop
from curator.store.schema import Annotation, Dataset, Evaluation, Round, RoundItem, Sample
from curator.store.session import transaction

from badinput import refused, run, sandbox  # noqa: F401  (sandbox is a fixture)
from conftest import ROOT, SAMPLE

CLASSES = [str(d) for d in range(10)]
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="digit" toName="image" choice="single">
""" + "".join(f'    <Choice value="{c}"/>\n' for c in CLASSES) + """  </Choices>
</View>
"""


def digits(n: int):
    _, images = next(iter_images(SAMPLE / "train-images-idx3-ubyte.gz", batch_size=n))
    return images, read_labels(SAMPLE / "train-labels-idx1-ubyte.gz")[:n]


def unlabeled_pool(settings, tmp_path, name="nolabels", n=300, classes=CLASSES):
    """``n`` MNIST digits ingested without labels (files ``0000012.png``...) and the hidden answers file."""
    images, labels = digits(n)
    ingest_arrays(images, None, dataset=name, split="train", name="train", settings=settings, classes=classes)
    answers = tmp_path / "answers.csv"
    answers.write_text("file,label\n" + "".join(f"{i:07d}.png,{y}\n" for i, y in enumerate(labels.tolist())))
    return name, answers, labels


def config(name, answers, **kw):
    return LoopConfig(dataset=name, rounds=3, budget=10, initial=20, subsample=None, epochs=2, labeler="answers",
                      answers=str(answers), **kw)


def rows_of(settings):
    with transaction(settings) as s:
        return {
            "rounds": s.execute(select(Round.number, Round.policy, Round.status).order_by(Round.number)).all(),
            "items": sorted(s.execute(select(Round.number, RoundItem.rank, RoundItem.sample_id, RoundItem.score)
                                      .join(Round, Round.id == RoundItem.round_id)).all()),
            "annotations": sorted(s.execute(select(Annotation.sample_id, Annotation.tool, Annotation.label)).all()),
            "evaluations": s.execute(select(Round.number, Evaluation.metric, Evaluation.n_labels, Evaluation.value)
                                     .join(Round, Round.id == Evaluation.round_id)
                                     .order_by(Round.number, Evaluation.metric)).all(),
        }


def _cold_unit(settings, name):
    from curator.embeddings import coldstart_vectors
    from curator.store.queries import dataset_id

    with transaction(settings) as s:
        ds = dataset_id(s, name)
        ids = np.array(s.scalars(select(Sample.id).where(Sample.dataset_id == ds).order_by(Sample.id)).all())
    X = coldstart_vectors(settings, ds, ids)
    return ids, X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


@pytest.mark.slow
def test_loop_with_no_ground_truth_and_declared_classes(settings, tmp_path):
    """Three rounds on 300 digits with no ground truth: typical seed round, answers from the hidden
    file only for what was selected, every curve point a cross-validation estimate, said in the report."""
    from curator.policies.coldstart import kmeans_labels

    name, answers, hidden = unlabeled_pool(settings, tmp_path)
    with transaction(settings) as s:
        assert s.scalar(select(func.count()).where(Sample.gt_label.is_not(None))) == 0
        assert s.execute(select(Dataset.classes, Dataset.classes_declared)).one() == (CLASSES, True)
    result = run_loop(settings, config(name, answers))
    assert result.rounds_done == 3 and result.waiting is None and result.n_labels == 50
    assert result.metrics == [CV_METRIC] * 4 and [n for n, _ in result.errors] == [20, 30, 40, 50]
    assert all(0 <= e <= 1 for _, e in result.errors)
    got = rows_of(settings)
    assert [(n, p) for n, p, _ in got["rounds"]] == [(0, "seed-typical"), (1, "curator"), (2, "curator"),
                                                     (3, "curator")]
    assert {m for _, m, _, _ in got["evaluations"]} == {CV_METRIC}  # no test error: there is no test split
    # the answers file answered exactly the selected samples, with its labels (files are 0-based: id order)
    with transaction(settings) as s:
        index_of = {sid: int(os.path.basename(uri)[:7]) for sid, uri in s.execute(select(Sample.id, Sample.uri))}
    assert len(got["annotations"]) == 50
    assert all(tool == "answers" and label == str(hidden[index_of[sid]]) for sid, tool, label in got["annotations"])

    # round 0 was chosen by typical: one pick per cluster of the embedding, unlike random picks
    ids, U = _cold_unit(settings, name)
    seed_ids = [sid for n, _, sid, _ in got["items"] if n == 0]
    position = {int(sid): j for j, sid in enumerate(ids)}
    picks = np.array([position[sid] for sid in seed_ids])
    clusters = kmeans_labels(U.astype(np.float32), 20, seed=123)
    rng = np.random.default_rng(0)
    random_hits = [len(set(clusters[rng.choice(len(ids), 20, replace=False)])) for _ in range(300)]
    hits = len(set(clusters[picks]))
    assert hits > np.percentile(random_hits, 95), (hits, np.mean(random_hits))
    seed_scores = [score for n, _, _, score in got["items"] if n == 0]
    assert all(np.isfinite(seed_scores)), "typical records each pick's typicality"
    classes_hit = len({int(hidden[index_of[sid]]) for sid in seed_ids})
    assert classes_hit >= 8, classes_hit  # measured: all 10 of 10 with 20 typical picks

    text = (settings.workspace / "reports" / name / "report.md").read_text()
    assert "| round | labels | validation error | estimate |" in text and "| 3 | 50 |" in text
    assert "cross-validation" in text and "No ground-truth test split" in text
    assert "test error" not in text.split("## How the curve is measured")[0]

    again = run_loop(settings, config(name, answers))  # nothing new
    assert again.errors == result.errors and rows_of(settings) == got


def test_curve_estimate_switches_by_label_count_and_holds_out_a_share_of_each_round():
    from curator.loop import MIN_VALIDATION, VALIDATION_SHARE, _split_labels, curve_metric, cv_folds

    switch = int(MIN_VALIDATION / VALIDATION_SHARE)
    assert curve_metric(switch - 1, False) == CV_METRIC and curve_metric(switch, False) == HOLDOUT_METRIC
    assert curve_metric(10, True) == curve_metric(10_000, True) == TEST_METRIC
    # 6 rounds of 100 labels: 20 of each round held out, the same ones whatever later rounds add
    round_of = {sid: sid // 100 for sid in range(600)}
    labels = [str(sid % 10) for sid in range(600)]
    split = _split_labels(7, list(range(600)), labels, False, round_of)
    assert split.metric == HOLDOUT_METRIC and split.n_labels == 600
    assert len(split.val_ids) == 120 and len(split.train_ids) == 480
    assert not set(split.val_ids) & set(split.train_ids)
    assert [sum(1 for v in split.val_ids if v // 100 == r) for r in range(6)] == [20] * 6
    fewer = _split_labels(7, list(range(550)), labels[:550], False, round_of)  # round 5 half labeled
    assert set(fewer.val_ids) & set(range(500)) == set(split.val_ids) & set(range(500))
    assert _split_labels(8, list(range(600)), labels, False, round_of).val_ids != split.val_ids  # seeded
    # few labels: all train, cross-validation; folds stratified by label
    few = _split_labels(7, list(range(40)), labels[:40], False, round_of)
    assert few.metric == CV_METRIC and few.train_ids == list(range(40)) and few.val_ids == []
    folds = cv_folds(labels[:40], 5, seed=7, number=0)
    assert np.bincount(folds).tolist() == [8] * 5
    for c in set(labels[:40]):
        assert len({int(folds[j]) for j in range(40) if labels[j] == c}) == 4  # 4 of a class: 4 folds


def test_classes_from_a_labelconfig_file_and_a_list_file(sandbox, tmp_path):  # noqa: F811
    from curator.classlist import parse_classes

    xml = tmp_path / "labelconfig.xml"
    xml.write_text(LABEL_CONFIG)
    listed = tmp_path / "classes.txt"
    listed.write_text("# digits\n" + "\n".join(CLASSES) + "\n\n")
    assert parse_classes(str(xml)) == parse_classes(f"@{listed}") == parse_classes(",".join(CLASSES)) == CLASSES
    images, _ = digits(30)
    np.save(tmp_path / "pool.npy", images)
    code, out, err = run(["ingest", tmp_path / "pool.npy", "-d", "fromxml", "--classes", xml])
    assert code == 0, err
    with transaction(sandbox.settings) as s:
        assert s.execute(select(Dataset.classes, Dataset.classes_declared)).one() == (CLASSES, True)
    # the same list again is fine (nothing changes); it stays the dataset's, in its order
    code, _, err = run(["ingest", tmp_path / "pool.npy", "-d", "fromxml", "--classes", f"@{listed}"])
    assert code == 0, err
    # the declared order is kept (not re-sorted), and Label Studio's generated config lists it
    from curator.integrations.labelstudio.labelconfig import image_classification

    order = ["zebra", "ant", "mole"]
    code, _, err = run(["ingest", tmp_path / "pool.npy", "-d", "ordered", "--classes", ",".join(order)])
    assert code == 0, err
    with transaction(sandbox.settings) as s:
        stored = s.scalar(select(Dataset.classes).where(Dataset.name == "ordered"))
    assert stored == order and image_classification(stored).choices == tuple(order)


def test_class_list_mismatch_is_one_clear_error_and_changes_nothing(sandbox, tmp_path):  # noqa: F811
    images, labels = digits(30)
    np.save(tmp_path / "pool.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    # ground truth with digits 0-9; a declared list without some of them is refused, nothing stored
    refused(sandbox, ["ingest", tmp_path / "pool.npy", "--labels", tmp_path / "labels.npy", "-d", "mixed",
                      "--classes", "0,1,2"], match="ground truth has classes")
    code, _, err = run(["ingest", tmp_path / "pool.npy", "--labels", tmp_path / "labels.npy", "-d", "mixed"])
    assert code == 0, err
    answers = tmp_path / "a.csv"
    answers.write_text("x.png,1\n")
    refused(sandbox, ["loop", "-d", "mixed", "--classes", "cat,dog", "--labeler", "answers", "--answers", answers],
            match="lacks")
    # declared first, then ground truth outside the list: the ingest is refused whole
    code, _, err = run(["ingest", tmp_path / "pool.npy", "-d", "declared", "--classes", "0,1"])
    assert code == 0, err
    np.save(tmp_path / "more.npy", images[:10])
    np.save(tmp_path / "more_labels.npy", labels[:10])
    refused(sandbox, ["ingest", tmp_path / "more.npy", "--labels", tmp_path / "more_labels.npy", "-d", "declared"],
            match="ground truth has classes")
    # another list for a dataset that declared one
    refused(sandbox, ["ingest", tmp_path / "pool.npy", "-d", "declared", "--classes", "1,0"], match="cannot change")
    # bad class lists never reach the database
    refused(sandbox, ["ingest", tmp_path / "pool.npy", "-d", "other", "--classes", "a,a,b"], match="twice")
    refused(sandbox, ["ingest", tmp_path / "pool.npy", "-d", "other", "--classes", f"@{tmp_path / 'none.txt'}"],
            match="does not exist")
    bad = tmp_path / "bad.xml"
    bad.write_text("<View><Choices name='a' toName='i'/><Choices name='b' toName='i'/></View>")
    refused(sandbox, ["ingest", tmp_path / "pool.npy", "-d", "other", "--classes", bad], match="<Choices> tags")


def test_answers_labeler_refuses_a_file_without_the_selected_samples(settings, tmp_path):
    from curator.exceptions import ValidationError

    name, answers, _ = unlabeled_pool(settings, tmp_path, n=60)
    answers.write_text("0000001.png,1\n")
    with pytest.raises(ValidationError, match="has no label for"):
        run_loop(settings, LoopConfig(dataset=name, rounds=0, initial=20, subsample=None, labeler="answers",
                                      answers=str(answers)), report=False)
    with transaction(settings) as s:  # the round stays selected, unlabeled: a fixed file resumes it
        assert s.scalars(select(Round.status)).all() == ["pushed"]
        assert s.scalar(select(func.count()).select_from(Annotation)) == 0
    with pytest.raises(ValidationError, match="oracle labeler needs ground truth"):
        run_loop(settings, LoopConfig(dataset=name, rounds=0, initial=20, subsample=None), report=False)


@pytest.mark.slow
def test_loop_without_ground_truth_resumes_after_a_kill(db_settings, tmp_path):
    """`curator loop --labeler answers --classes ...` killed (exit 137, as under kill -9) after round 1
    is labeled, before its estimate: the resumed run stores what an uninterrupted run stores."""
    from curator.loop import FAULT_ENV
    from curator.settings import Settings
    from curator.store.session import dispose_all

    name, answers, _ = unlabeled_pool(db_settings, tmp_path, n=200, classes=None)
    (tmp_path / "ref").mkdir()
    reference = Settings(workspace=tmp_path / "ref" / "ws")  # SQLite: the same rows on either backend
    unlabeled_pool(reference, tmp_path / "ref", n=200, classes=None)
    argv = ["loop", "-d", name, "--rounds", "1", "--budget", "6", "--subsample", "0", "--labeler", "answers",
            "--answers", str(answers), "--classes", ",".join(CLASSES), "--epochs", "1"]
    cfg = LoopConfig(dataset=name, rounds=1, budget=6, initial=20, subsample=None, labeler="answers",
                     answers=str(answers), classes=CLASSES, epochs=1)
    run_loop(reference, cfg, plots=False)
    want = rows_of(reference)
    dispose_all()

    env = {**os.environ, "CURATOR_WORKSPACE": str(db_settings.workspace), "CURATOR_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if db_settings.db_url:
        env["CURATOR_DB_URL"] = db_settings.db_url
    proc = subprocess.run([sys.executable, "-m", "curator", *argv], capture_output=True, text=True, timeout=600,
                          env={**env, FAULT_ENV: "evaluate:1"})
    assert proc.returncode == 137, proc.stderr
    before = rows_of(db_settings)
    assert [s for _, _, s in before["rounds"]] == ["done", "done"] and len(before["annotations"]) == 26
    assert [(n, m) for n, m, _, _ in before["evaluations"]] == [(0, CV_METRIC)]
    proc = subprocess.run([sys.executable, "-m", "curator", *argv], capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert "validation estimate" in proc.stdout and "cross-validation" in proc.stdout
    assert rows_of(db_settings) == want
