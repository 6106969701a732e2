"""Sync to FiftyOne, Brain similarity and import from FiftyOne, checked through FiftyOne's API.

Every test runs against the session's private mongod (``fiftyone_db``), on
real MNIST-1989 digits ingested into a temporary workspace.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fiftyone_data import ROUND_SIZE, WRONG, make_workspace

pytestmark = pytest.mark.fiftyone


@pytest.fixture
def fo(fiftyone_db):
    import fiftyone

    yield fiftyone
    fiftyone.delete_datasets("*")


@pytest.fixture
def ws(settings, fo):
    return make_workspace(settings)


def test_sync_writes_one_sample_per_curator_sample_with_its_state(db_settings, fo):
    from curator.integrations.fiftyone import sync
    from curator.store.schema import Sample
    from curator.store.session import transaction
    from sqlalchemy import select

    data = make_workspace(db_settings)
    report = sync(db_settings, "digits")
    assert report.fo_dataset == "curator-digits" and report.added == len(data["ids"]) == report.samples
    ds = fo.load_dataset("curator-digits")
    assert ds.persistent and len(ds) == len(data["ids"])
    with transaction(db_settings) as s:
        uris = dict(s.execute(select(Sample.id, Sample.uri)).all())
    cid = ds.values("curator_id")
    assert ds.values("filepath") == [uris[i] for i in cid]  # same files, no copies
    assert len(set(cid)) == len(cid)

    by_id = {sample.curator_id: sample for sample in ds}
    for sid in data["ids"]:
        sample = by_id[sid]
        assert sample.curator_entropy == pytest.approx(data["entropy"][sid])
        assert sample.curator_margin == pytest.approx(1 - data["entropy"][sid])
        assert sample.ground_truth.label == data["gt"][sid]
        assert sample.prediction.label == str(data["pred"][sid])
        assert sample.prediction.confidence == pytest.approx(0.5 + data["entropy"][sid] / 4)
        assert sample.curator_split == "train"
    for rank, sid in enumerate(data["round"]):
        assert (by_id[sid].curator_round, by_id[sid].curator_rank) == (1, rank)
    assert sum(s.curator_round is not None for s in ds) == ROUND_SIZE
    first = data["ids"][0]
    assert by_id[first].human_label.label == data["human"][first]
    assert by_id[first].human_label.confidence == pytest.approx(0.5)
    assert by_id[first].curator_annotations == 2
    # labelers' agreement (issue 17): ann and bob disagree on the first sample only
    assert by_id[first].curator_agreement == pytest.approx(0.5) and by_id[first].curator_disagreement
    for sid in data["human"]:
        if sid != first:
            assert by_id[sid].curator_agreement == 1.0 and by_id[sid].curator_disagreement is False
    assert all(s.curator_disagreement is None for s in ds if s.human_label is None)
    assert sum(s.human_label is not None for s in ds) == len(data["human"])

    # planted copies: an exact one (first copy kept) and a shifted one (the labeled original kept)
    a, b = data["duplicate"]
    c, d = data["near"]
    assert by_id[a].curator_dup_group == by_id[b].curator_dup_group == a
    assert by_id[a].curator_is_representative and not by_id[b].curator_is_representative
    assert by_id[c].curator_dup_group == by_id[d].curator_dup_group == c
    assert by_id[c].curator_is_representative and not by_id[d].curator_is_representative
    assert by_id[data["ids"][5]].curator_dup_group is None
    assert by_id[data["ids"][5]].curator_is_representative

    assert set(report.views) == {"next-batch", "duplicate-groups", "most-uncertain", "disagreements",
                                 "labeler-disagreements"}
    assert ds.load_saved_view("labeler-disagreements").values("curator_id") == [first]
    assert ds.load_saved_view("next-batch").values("curator_id") == data["round"]
    assert ds.load_saved_view("duplicate-groups").values("curator_id") == [a, b, c, d]
    assert (report.embeddings, report.similarity) == ("coldstart", "curator_similarity")
    uncertain = ds.load_saved_view("most-uncertain")
    values = uncertain.values("curator_entropy")
    assert values == sorted(values, reverse=True) and len(values) == len(data["ids"]) - len(data["human"])
    disagree = set(ds.load_saved_view("disagreements").values("curator_id"))
    assert disagree == {data["ids"][k] for k in WRONG} | {first}
    info = ds.info["curator"]
    assert info["dataset"] == "digits" and "password" not in json.dumps(info)


def test_resync_updates_in_place(settings, ws, fo):
    from curator import ingest_arrays
    from curator.integrations.fiftyone import sync
    from curator.store.schema import Score
    from curator.store.session import transaction
    from fiftyone_data import sample_images

    sync(settings, "digits")
    ds = fo.load_dataset("curator-digits")
    before = dict(zip(ds.values("curator_id"), ds.values("id")))
    with transaction(settings) as s:  # a newer score, and two new digits
        s.add(Score(sample_id=ws["ids"][30], kind="entropy", value=9.0))
    images, labels = sample_images(70)
    ingest_arrays(images[-2:], labels[-2:], dataset="digits", name="more", settings=settings)

    report = sync(settings, "digits")
    assert (report.added, report.removed, report.samples) == (2, 0, len(ws["ids"]) + 2)
    ds.reload()
    after = dict(zip(ds.values("curator_id"), ds.values("id")))
    assert len(ds) == len(after) == len(ws["ids"]) + 2
    assert all(after[k] == v for k, v in before.items())  # same FiftyOne samples, updated
    assert ds.match(fo.ViewField("curator_id") == ws["ids"][30]).first().curator_entropy == 9.0
    assert ds.load_saved_view("most-uncertain").first().curator_id == ws["ids"][30]
    assert fo.list_datasets() == ["curator-digits"]


def test_sync_of_a_round_and_of_a_version(settings, ws, fo):
    from curator import versions
    from curator.integrations.fiftyone import sync

    report = sync(settings, "digits", round=1)
    assert report.fo_dataset == "curator-digits-round-1" and report.samples == ROUND_SIZE
    ds = fo.load_dataset("curator-digits-round-1")
    assert sorted(ds.values("curator_id")) == sorted(ws["round"])
    assert ds.load_saved_view("next-batch").values("curator_rank") == list(range(ROUND_SIZE))

    versions.create_version("v1", dataset="digits", settings=settings)
    report = sync(settings, "digits", version="v1")
    ds = fo.load_dataset("curator-digits-v1")
    assert sorted(ds.values("curator_id")) == sorted(ws["human"])
    assert {s.curator_id: s.version_label.label for s in ds} == ws["human"]
    assert set(ds.values("curator_version")) == {"v1"}
    # the whole-dataset sync shows which version holds each label
    sync(settings, "digits")
    full = fo.load_dataset("curator-digits")
    held = {s.curator_id: s.curator_version for s in full if s.curator_version}
    assert held == {k: "v1" for k in ws["human"]}


def test_bad_input_names_the_problem_and_writes_nothing(settings, ws, fo):
    from curator.exceptions import FiftyOneError, NotFoundError, ValidationError
    from curator.integrations.fiftyone import sync
    from curator.store.schema import Sample
    from curator.store.session import transaction
    from sqlalchemy import select

    with pytest.raises(NotFoundError, match="dataset 'nope' does not exist.*digits"):
        sync(settings, "nope")
    with pytest.raises(NotFoundError, match="round 7 of dataset 'digits' does not exist .rounds: 1"):
        sync(settings, "digits", round=7)
    with pytest.raises(NotFoundError, match="version 'v9' does not exist"):
        sync(settings, "digits", version="v9")
    assert fo.list_datasets() == []

    other = fo.Dataset("taken")  # a FiftyOne dataset curator did not make is never overwritten
    other.persistent = True
    with pytest.raises(FiftyOneError, match="'taken' exists but was not made by curator"):
        sync(settings, "digits", fo_name="taken")
    assert len(fo.load_dataset("taken")) == 0

    with transaction(settings) as s:
        uri = s.scalar(select(Sample.uri).where(Sample.id == ws["ids"][4]))
    Path(uri).unlink()
    with pytest.raises(ValidationError, match=r"1 image file\(s\) of dataset 'digits' are missing, e.g. .*restore"):
        sync(settings, "digits")
    assert fo.list_datasets() == ["taken"]  # no half-built dataset left behind


def test_similarity_and_map_from_the_stored_embeddings(settings, ws, fo):
    """The newest stored embeddings (a CNN's) feed Brain: the exact copy is its original's
    nearest neighbour, and a 2-D map covers every sample."""
    from curator import embeddings, rounds
    from curator.exceptions import ValidationError
    from curator.integrations.fiftyone import register_similarity, sync

    labeled = sorted(ws["human"])
    model = rounds.train_model(settings, "digits", labeled, [ws["human"][i] for i in labeled], steps=20)
    embeddings.compute_embeddings(settings, "digits", model.adapter, model_id=model.model_id)
    report = sync(settings, "digits")
    assert report.embeddings.split(":")[0] == model.adapter.name
    ds = fo.load_dataset("curator-digits")
    a, b = ws["duplicate"]
    query = ds.match(fo.ViewField("curator_id") == a).first().id
    nearest = ds.sort_by_similarity(query, k=2, brain_key="curator_similarity").values("curator_id")
    assert set(nearest) == {a, b}
    points = ds.load_brain_results("curator_visualization").points
    assert points.shape == (len(ds), 2) and np.isfinite(points).all()
    before = ds.get_brain_info("curator_similarity").timestamp
    sync(settings, "digits")  # nothing changed: the brain runs are kept as they are
    assert ds.get_brain_info("curator_similarity").timestamp == before
    embeddings.compute_embeddings(settings, "digits", _Shuffled(model.adapter))  # newer embeddings
    report = sync(settings, "digits")
    assert report.embeddings.startswith("shuffled") and ds.get_brain_info("curator_similarity").timestamp > before
    assert ds.list_brain_runs() == ["curator_similarity", "curator_visualization"]  # replaced, not added
    with pytest.raises(ValidationError, match="one row per sample"):
        register_similarity(ds, np.ones((3, 4)))


def test_import_fiftyone_dataset_as_a_pool(settings, fo, tmp_path):
    from curator.exceptions import NotFoundError, ValidationError
    from curator.integrations.fiftyone import import_dataset
    from curator.ingest._common import encode_png
    from curator.store.queries import dataset_summaries
    from fiftyone_data import sample_images

    images, labels = sample_images(12)
    folder = tmp_path / "fo-images"
    folder.mkdir()
    src = fo.Dataset("digits-in-fiftyone")
    for k, (img, lab) in enumerate(zip(images, labels)):
        path = folder / f"{k}.png"
        path.write_bytes(encode_png(img))
        src.add_sample(fo.Sample(
            filepath=str(path), tags=["train" if k < 10 else "test"],
            ground_truth=fo.Classification(label=str(lab)) if k % 2 == 0 else None,
        ))
    report = import_dataset(settings, "digits-in-fiftyone", "imported")
    assert (report.added, report.total, report.skipped) == (12, 12, [])
    (row,) = dataset_summaries(settings)
    assert row["splits"] == {"train": 10, "test": 2}
    assert row["classes"] == sorted({str(labels[k]) for k in range(0, 12, 2)}, key=int)
    assert import_dataset(settings, "digits-in-fiftyone", "imported").added == 0  # idempotent

    with pytest.raises(NotFoundError, match="FiftyOne dataset 'missing' does not exist.*digits-in-fiftyone"):
        import_dataset(settings, "missing", "x")
    with pytest.raises(ValidationError, match="no Classification field 'label'.*ground_truth"):
        import_dataset(settings, "digits-in-fiftyone", "x", label_field="label")
    (folder / "3.png").unlink()
    (folder / "5.png").write_bytes(b"not a png")
    with pytest.raises(ValidationError, match=r"1 of 12 files .* are missing, e.g. .*3\.png.*--skip-bad"):
        import_dataset(settings, "digits-in-fiftyone", "broken")
    assert [r["name"] for r in dataset_summaries(settings)] == ["imported"]  # nothing half-imported
    report = import_dataset(settings, "digits-in-fiftyone", "broken", skip_bad=True)
    assert report.added == 10 and sorted(Path(p).name for p, _ in report.skipped) == ["3.png", "5.png"]


def test_cli_sync_and_import(settings, ws, fo, monkeypatch, capsys):
    from curator.cli import main

    monkeypatch.setenv("CURATOR_WORKSPACE", str(settings.workspace))

    def run(*argv):
        with pytest.raises(SystemExit) as exit_:
            main(list(argv))
        out = capsys.readouterr()
        return exit_.value.code, out.out, out.err

    code, out, err = run("fiftyone", "sync", "--dataset", "digits", "--json")
    assert code == 0, err
    report = json.loads(out)  # stdout holds the JSON document only
    assert report["samples"] == len(ws["ids"]) and report["views"][0] == "next-batch"
    assert (report["similarity"], report["visualization"]) == ("curator_similarity", "curator_visualization")
    code, out, err = run("fiftyone", "sync", "--dataset", "digits", "--no-duplicates", "--visualization", "none", "--json")
    report = json.loads(out)
    assert code == 0 and "near_duplicates" in report["skipped"] and report["visualization"] is None
    code, out, err = run("fiftyone", "sync", "--dataset", "digits", "--round", "1")
    assert code == 0 and out.startswith(f"curator-digits-round-1: {ROUND_SIZE} samples from round 1")
    code, out, err = run("fiftyone", "sync", "--dataset", "nope")
    assert code == 4 and err.startswith("error: dataset 'nope' does not exist")
    code, out, err = run("fiftyone", "sync", "--dataset", "digits", "--version", "v0")
    assert code == 4 and "version 'v0' does not exist" in err
    code, out, err = run("fiftyone", "import", "curator-digits", "--dataset", "again", "--json")
    assert code == 0 and json.loads(out)["added"] == len(ws["ids"])
    code, out, err = run("fiftyone", "app", "not-there", "--port", "5999")
    assert code == 4 and "FiftyOne dataset 'not-there' does not exist" in err


class _Shuffled:
    """Another model: the CNN's embedding with its dimensions reversed."""

    name, version = "shuffled", "1"

    def __init__(self, adapter):
        self.adapter = adapter

    def embed(self, images):
        return self.adapter.embed(images)[:, ::-1]


def test_interrupted_resync_is_marked_and_the_next_one_repairs_it(settings, ws, fo, monkeypatch):
    import importlib

    sync_mod = importlib.import_module("curator.integrations.fiftyone.sync")  # the module, not the function
    from curator.store.schema import Score
    from curator.store.session import transaction

    first = sync_mod.sync(settings, "digits", similarity=False, visualization=None)
    assert not first.repaired
    ds = fo.load_dataset("curator-digits")
    assert ds.info["curator"]["complete"] is True
    with transaction(settings) as s:
        s.add(Score(sample_id=ws["ids"][5], kind="entropy", value=7.0))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sync_mod, "_finish", killed)
    with pytest.raises(KeyboardInterrupt):
        sync_mod.sync(settings, "digits", similarity=False, visualization=None)
    ds.reload()
    assert ds.info["curator"]["complete"] is False
    monkeypatch.undo()

    again = sync_mod.sync(settings, "digits", similarity=False, visualization=None)
    ds.reload()
    assert again.repaired and ds.info["curator"]["complete"] is True
    assert ds.match(fo.ViewField("curator_id") == ws["ids"][5]).first().curator_entropy == 7.0
    assert not sync_mod.sync(settings, "digits", similarity=False, visualization=None).repaired
    assert len(ds) == len(ws["ids"])
