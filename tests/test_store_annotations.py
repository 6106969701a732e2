"""The annotations aggregate of the store (curator/store/annotations.py): projects, task links, answers.

Push, pull, the oracle and FiftyOne's sync go through these functions only; they must keep the
guarantees the reliability tests check end to end (a sample linked once per project, answers never
lost when links go, the agreed label defined once), and hand out plain frozen values, never ORM rows.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from curator.store import annotations as A
from curator.store import rounds as R
from curator.store.queries import agreed_labels as queries_agreed_labels
from curator.store.queries import dataset_id
from curator.store.schema import Annotation, EmbeddingSet, LabelProject, Model, Sample, Score, TaskLink
from curator.store.session import transaction

TOOL = "labelstudio"


@pytest.fixture
def pool(db_settings, small_idx):
    """Dataset ``a`` (64 samples, round 1 of its first 6) and dataset ``b`` (the same images)."""
    from curator.ingest import ingest_idx

    settings = db_settings
    for name in ("a", "b"):
        ingest_idx(*small_idx, dataset=name, split="train", settings=settings)
    with transaction(settings) as s:
        a, b = dataset_id(s, "a"), dataset_id(s, "b")
        ids = s.scalars(select(Sample.id).where(Sample.dataset_id == a).order_by(Sample.id)).all()
        rnd = R.create(s, a, ids[:6], np.linspace(1, 0, 6), policy="p", params=None, budget=6, seed=1, model_id=None)
    return settings, a, b, list(ids), rnd


def _project(s, ds, name="p"):
    return A.add_project(s, TOOL, name, external_id=41, dataset_id=ds, label_config="<View/>",
                         from_name="label", to_name="image", image_field="image")


def test_a_project_is_recorded_once_and_read_back_as_a_frozen_value(pool):
    settings, a, b, ids, rnd = pool
    with transaction(settings) as s:
        made = _project(s, a)
        _project(s, b, "q")
    with transaction(settings) as s:
        got = A.project(s, TOOL, "p")
        assert got == made and got.external_id == 41 and got.dataset_id == a and got.pulled_at is None
        assert A.project(s, TOOL, "nope") is None and A.project(s, "other-tool", "p") is None
        assert A.project_names(s, TOOL) == ["p", "q"] and A.project_names(s, "other-tool") == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.external_id = 7  # nothing outside the store can change a project behind its back
    with pytest.raises(IntegrityError):
        with transaction(settings) as s:
            _project(s, a)  # (tool, name) is unique: a second push cannot record a second project
    when = dt.datetime(2026, 5, 4, 3, 2, 1, tzinfo=dt.timezone.utc)
    with transaction(settings) as s:
        A.set_pulled_at(s, got.id, when)
    with transaction(settings) as s:
        assert A.naive_utc(A.project(s, TOOL, "p").pulled_at) == when.replace(tzinfo=None)
        assert A.project(s, TOOL, "q").pulled_at is None  # only that project's cursor moved


def test_links_are_unique_per_project_and_dropping_them_keeps_the_answers(pool):
    settings, a, b, ids, rnd = pool
    with transaction(settings) as s:
        _project(s, a)
        A.add_links(s, TOOL, "p", rnd.id, [(ids[0], 100), (ids[1], 101), (ids[2], 102)])
        A.add_links(s, TOOL, "other", rnd.id, [(ids[0], 100)])  # another project may hold the sample
    with pytest.raises(IntegrityError):
        with transaction(settings) as s:
            A.add_links(s, TOOL, "p", rnd.id, [(ids[3], 103), (ids[0], 999)])  # sample 0 is linked already
    with transaction(settings) as s:
        assert A.links(s, TOOL, "p") == {ids[0]: 100, ids[1]: 101, ids[2]: 102}  # the batch rolled back whole
        index = A.link_index(s, TOOL, "p")
        assert sorted(index) == [100, 101, 102] and [index[t][1] for t in (100, 101, 102)] == ids[:3]
        truth = dict(s.execute(select(Sample.id, Sample.gt_label).where(Sample.id.in_(ids[:3]))).all())
        assert A.linked_truth(s, TOOL, "p") == truth and all(truth.values())
        A.add_annotations(s, TOOL, [
            A.NewAnnotation(sample_id=ids[1], task_link_id=index[101][0], external_id="e1", label="3",
                            skipped=False, annotator="x@y", created_at=dt.datetime.now(dt.timezone.utc),
                            updated_at=None)])
    with transaction(settings) as s:
        assert A.drop_links(s, TOOL, "p", [ids[1], ids[5]]) == 1  # ids[5] was never linked
        assert A.links(s, TOOL, "p") == {ids[0]: 100, ids[2]: 102}
        assert A.annotations_of(s, TOOL, "p") == []  # detached from the project ...
        kept = s.execute(select(Annotation.sample_id, Annotation.label, Annotation.task_link_id)).all()
        assert kept == [(ids[1], "3", None)]  # ... but not lost
        assert A.agreed_labels(s, a) == {ids[1]: ("3", 1.0, 1)}
        A.drop_project(s, TOOL, "p")
    with transaction(settings) as s:
        assert A.project(s, TOOL, "p") is None and A.links(s, TOOL, "p") == {}
        assert A.links(s, TOOL, "other") == {ids[0]: 100}  # another project's links stay
        assert s.scalar(select(LabelProject.id).where(LabelProject.name == "p")) is None


def test_answers_are_added_changed_and_marked_deleted_never_removed(pool):
    settings, a, b, ids, rnd = pool
    t0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    with transaction(settings) as s:
        _project(s, a)
        A.add_links(s, TOOL, "p", rnd.id, [(ids[k], 200 + k) for k in range(3)])
        index = A.link_index(s, TOOL, "p")

        def new(k, ext, label, skipped=False):
            return A.NewAnnotation(sample_id=ids[k], task_link_id=index[200 + k][0], external_id=ext, label=label,
                                   skipped=skipped, annotator=f"{ext}@x", created_at=t0, updated_at=t0)

        A.add_annotations(s, TOOL, [new(0, "a1", "1"), new(0, "a2", "2"), new(0, "a3", "2"),
                                    new(1, "b1", "7"), new(2, "c1", "ignored", skipped=True)])
    with pytest.raises(IntegrityError):
        with transaction(settings) as s:
            A.add_annotations(s, TOOL, [new(1, "b1", "7")])  # a pull that runs twice stores nothing twice
    with transaction(settings) as s:
        stored = {x.external_id: x for x in A.annotations_of(s, TOOL, "p")}
        assert sorted(stored) == ["a1", "a2", "a3", "b1", "c1"]
        assert stored["c1"].label is None and stored["c1"].skipped  # a skip carries no label
        assert stored["a2"].task_id == 200 and stored["a2"].updated_at == t0.replace(tzinfo=None)
        assert A.count_skipped(s, TOOL, "p") == 1
        assert A.agreed_labels(s, a) == {ids[0]: ("2", 2 / 3, 3), ids[1]: ("7", 1.0, 1)}
        assert A.agreed_labels(s, b) == {}
        A.mark_deleted(s, [stored["a2"].id, stored["c1"].id])
        t1 = t0 + dt.timedelta(hours=1)
        A.change_annotations(s, [A.AnnotationChange(id=stored["b1"].id, label="8", skipped=False,
                                                    annotator="z@x", updated_at=t1)])
    with transaction(settings) as s:
        now = {x.external_id: x for x in A.annotations_of(s, TOOL, "p")}
        assert sorted(now) == sorted(stored) and now["a2"].deleted and now["c1"].deleted
        assert A.count_skipped(s, TOOL, "p") == 0
        assert (now["b1"].label, now["b1"].annotator, now["b1"].updated_at) == ("8", "z@x", t1.replace(tzinfo=None))
        got = A.agreed_labels(s, a)
        assert got == {ids[0]: ("2", 0.5, 2), ids[1]: ("8", 1.0, 1)}  # a tie: the newest answer wins
        assert queries_agreed_labels(s, a) == got  # one definition, whichever module is asked
        A.change_annotations(s, [A.AnnotationChange(id=now["a2"].id, label="2", skipped=False, annotator=None,
                                                    updated_at=t1)])  # the server has it again: live again
    with transaction(settings) as s:
        assert A.agreed_labels(s, a)[ids[0]] == ("2", 2 / 3, 3)


def test_reads_of_samples_scores_embeddings_and_models(pool):
    settings, a, b, ids, rnd = pool
    with transaction(settings) as s:
        info = A.dataset_info(s, a)
        assert (info.id, info.name) == (a, "a") and len(info.classes) == 10 and isinstance(info.classes, tuple)
        rows = A.sample_rows(s, a)
        assert [r.id for r in rows] == ids and {r.dataset_id for r in rows} == {a}
        assert all(len(r.sha256) == 64 and r.split == "train" and r.gt_label is not None for r in rows)
        files = A.sample_files(s, [ids[3], ids[1]])
        assert files == {ids[1]: (rows[1].uri, rows[1].sha256), ids[3]: (rows[3].uri, rows[3].sha256)}
        m1 = s.scalar(insert(Model).values(name="cnn", version="v1", checksum="c" * 64, path="/m1.pt",
                                           params={"dataset": "a"}).returning(Model.id))
        m2 = s.scalar(insert(Model).values(name="cnn", version="v2", checksum="d" * 64, path=None,
                                           params={"dataset": "a"}).returning(Model.id))
        m3 = s.scalar(insert(Model).values(name="cnn", version="v3", checksum="e" * 64, path="/m3.pt",
                                           params={"dataset": "b"}).returning(Model.id))
        cold = s.scalar(insert(Model).values(name="coldstart", version="1", checksum="f" * 64).returning(Model.id))
        s.execute(insert(Score), [
            {"sample_id": ids[0], "kind": "prediction", "value": 3.0, "model_id": m1},
            {"sample_id": ids[0], "kind": "confidence", "value": 0.9, "model_id": m1},
            {"sample_id": ids[1], "kind": "prediction", "value": 4.0, "model_id": m1},
            {"sample_id": ids[0], "kind": "prediction", "value": 5.0, "model_id": m2},  # newer, another model
            {"sample_id": ids[1], "kind": "entropy", "value": 0.5, "model_id": m2},
        ])
        for model, done in ((m1, 64), (m2, 10), (cold, 64)):
            s.execute(insert(EmbeddingSet).values(dataset_id=a, model_id=model, dim=8, count=64, done=done,
                                                  path=f"/e{model}", sample_ids_path=f"/i{model}"))
    with transaction(settings) as s:
        latest = A.latest_scores(s, a)
        assert latest == {"prediction": {ids[0]: 5.0, ids[1]: 4.0}, "confidence": {ids[0]: 0.9},
                          "entropy": {ids[1]: 0.5}}
        assert A.latest_scores(s, a, model_id=m1, kinds=("prediction",)) == {"prediction": {ids[0]: 3.0, ids[1]: 4.0}}
        assert A.latest_scores(s, a, model_id=m1, sample_ids=[ids[1], ids[9]]) == {"prediction": {ids[1]: 4.0}}
        assert A.latest_scores(s, b) == {}
        assert A.model_label(s, m1) == "cnn:v1" and A.model_label(s, 10 ** 6) is None
        # the newest COMPLETE set of a trained model (m2's is unfinished, the cold-start one excluded)
        assert A.newest_trained_embeddings(s, a, exclude_model="coldstart") == (m1, "cnn", "v1")
        assert A.newest_trained_embeddings(s, a, exclude_model="cnn") == (cold, "coldstart", "1")
        assert A.newest_trained_embeddings(s, b, exclude_model="coldstart") is None
        # the newest model saved to a file and trained on the dataset (m2 has no file, m3 is b's)
        assert A.newest_model_with_file(s, "a") == m1 and A.newest_model_with_file(s, "b") == m3
        assert A.newest_model_with_file(s, "c") is None
