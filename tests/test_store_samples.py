"""The store's samples, models and embeddings aggregates, and the step runner, on SQLite and PostgreSQL.

Each function takes the caller's session and returns plain data (arrays, tuples, frozen
dataclasses); these tests write through the store's own functions and read back through them.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from curator.exceptions import NotFoundError, ValidationError
from curator.steps import run_step
from curator.store import embeddings as store_emb
from curator.store import models as store_models
from curator.store import rounds as store_rounds
from curator.store import samples as store_samples
from curator.store.queries import add_annotations, annotated_sample_ids
from curator.store.session import transaction


def _row(uri: str, content: str | None = None, split="train", label="0") -> dict:
    return {"uri": uri, "sha256": hashlib.sha256((content or uri).encode()).hexdigest(), "width": 2, "height": 2,
            "channels": 1, "split": split, "gt_label": label, "duplicate_of_id": None}


def _dataset(settings, name="ds", n=6):
    """A dataset of ``n`` samples: even positions split train, odd test; labels i % 3; the last
    one without ground truth."""
    rows = [_row(f"/img/{name}/{i}.png", split="train" if i % 2 == 0 else "test",
                 label=None if i == n - 1 else str(i % 3)) for i in range(n)]
    with transaction(settings) as s:
        ds, classes = store_samples.find_or_create_dataset(s, name)
        ids = store_samples.insert_samples(s, ds, rows)
    return ds, classes, ids


def test_dataset_create_insert_read_back(db_settings):
    ds, classes, ids = _dataset(db_settings)
    assert classes == [] and len(ids) == 6 and ids == sorted(ids)
    with transaction(db_settings) as s:
        assert store_samples.find_or_create_dataset(s, "ds") == (ds, [])  # found, not created twice
        store_samples.set_classes(s, ds, ["0", "1", "2"])
    with transaction(db_settings) as s:
        assert store_samples.classes(s, ds) == ["0", "1", "2"]
        assert store_samples.find_or_create_dataset(s, "ds") == (ds, ["0", "1", "2"])
        assert store_samples.count(s, ds) == 6
        assert store_samples.ids(s, ds).tolist() == ids
        rows = store_samples.listing(s, ds)
        assert rows.ids.dtype == np.int64 and rows.ids.tolist() == ids
        assert rows.uris == [f"/img/ds/{i}.png" for i in range(6)] and all(len(h) == 64 for h in rows.sha256)
        # the same ids and hashes as arrays, read in pages (4 a page: a full page then a short one)
        for page in (4, 6, None):
            arr = store_samples.hash_arrays(s, ds, page=page)
            assert arr.ids.dtype == np.int64 and arr.ids.tolist() == ids and arr.sha256.dtype == np.dtype("S32")
            assert arr.sha256.tobytes() == bytes.fromhex("".join(rows.sha256))
        # URIs come back in the order asked for, repeats included; an unknown id is named
        assert store_samples.uris(s, [ids[3], ids[0], ids[3]]) == ["/img/ds/3.png", "/img/ds/0.png", "/img/ds/3.png"]
        with pytest.raises(NotFoundError, match=str(ids[-1] + 100)):
            store_samples.uris(s, [ids[0], ids[-1] + 100])
        assert store_samples.stored_uris(s, ["/img/ds/1.png", "/nope.png"]) == {"/img/ds/1.png"}
        assert sorted(store_samples.all_uris(s)) == sorted(rows.uris)
        (summary,) = store_samples.summaries(s)
        assert summary == {"name": "ds", "samples": 6, "splits": {"train": 3, "test": 3}, "duplicates": 0,
                           "classes": ["0", "1", "2"]}
        other, _ = store_samples.find_or_create_dataset(s, "empty")
        empty = store_samples.hash_arrays(s, other)
        assert len(empty) == 0 and empty.sha256.dtype == np.dtype("S32")


def test_truth_split_and_known_only(db_settings):
    ds, _, ids = _dataset(db_settings)
    with transaction(db_settings) as s:
        t = store_samples.truth(s, ds)
        assert t.ids.tolist() == ids and t.labels == ["0", "1", "2", "0", "1", None]
        t = store_samples.truth(s, ds, split="test", known_only=True)
        assert t.ids.tolist() == [ids[1], ids[3]] and t.labels == ["1", "0"]
        t = store_samples.truth(s, sample_ids=[ids[5], ids[2]])  # by ids: id order, None kept
        assert t.ids.tolist() == [ids[2], ids[5]] and t.labels == ["2", None]
        assert store_samples.in_split(s, [ids[4], ids[1], ids[0]], "train").tolist() == [ids[0], ids[4]]
        assert store_samples.in_split(s, [ids[4], ids[1]], None).tolist() == [ids[1], ids[4]]


def test_ingest_helpers_mark_exact_copies(db_settings):
    with transaction(db_settings) as s:
        ds, _ = store_samples.find_or_create_dataset(s, "copies")
        a, b = store_samples.insert_samples(s, ds, [_row("/a.png", "same"), _row("/b.png", "other")])
        (c,) = store_samples.insert_samples(s, ds, [_row("/c.png", "same")])
        store_samples.mark_duplicates(s, {c: a})
    with transaction(db_settings) as s:
        first = store_samples.first_of_hashes(s, ds)
        assert sorted(first.values()) == [a, b]
        assert store_samples.known_uris(s, ds, ["/a.png", "/z.png"]) == {"/a.png": _row("", "same")["sha256"]}
        assert store_samples.candidate_ids(s, ds).tolist() == [a, b]  # the copy is not a candidate
        assert store_samples.summaries(s)[0]["duplicates"] == 1


def test_pool_leaves_out_labeled_pending_and_copies(db_settings):
    ds, _, ids = _dataset(db_settings)
    with transaction(db_settings) as s:
        store_samples.mark_duplicates(s, {ids[4]: ids[0]})
        add_annotations(s, "oracle", {ids[0]: "0"}, annotator="oracle")
        store_rounds.create(s, ds, [ids[2]], [np.nan], policy="p", params=None, budget=1, seed=0, model_id=None)
    with transaction(db_settings) as s:
        pool, taken = store_samples.pool_ids(s, ds, "train")
        assert pool.tolist() == [] and taken.tolist() == [ids[0], ids[2]]
        pool, taken = store_samples.pool_ids(s, ds)
        assert pool.tolist() == [ids[1], ids[3], ids[5]] and pool.dtype == np.int64
        assert annotated_sample_ids(s, ids) == {ids[0]}
        assert add_annotations(s, "oracle", {ids[0]: "0", ids[1]: "1"}) == 1  # ids[0] answered already


def test_write_scores_replaces_and_skips_nan(db_settings):
    ds, _, ids = _dataset(db_settings, n=3)
    with transaction(db_settings) as s:
        m = store_models.register(s, "m", "v1", checksum="0" * 64)
        assert store_samples.write_scores(s, m.id, ids, {"entropy": [0.1, np.nan, 0.3]}) == 2
    with transaction(db_settings) as s:  # again, new values: replaced, not added
        assert store_samples.write_scores(s, m.id, ids, {"entropy": [0.5, 0.6, 0.7], "margin": [1, 2, 3]}) == 6
    from sqlalchemy import select

    from curator.store.schema import Score

    with transaction(db_settings) as s:
        got = s.execute(select(Score.sample_id, Score.kind, Score.value).order_by(Score.kind, Score.sample_id)).all()
    assert [(k, v) for _, k, v in got] == [("entropy", 0.5), ("entropy", 0.6), ("entropy", 0.7),
                                           ("margin", 1.0), ("margin", 2.0), ("margin", 3.0)]


def test_models_register_once_and_one_way_to_find(db_settings, tmp_path):
    weights = tmp_path / "w.pt"
    with transaction(db_settings) as s:
        a = store_models.register(s, "smallcnn", "aaa", checksum="a" * 64, params={"dataset": "ds"})
        again = store_models.register(s, "smallcnn", "aaa", checksum="a" * 64, path=str(weights))
        b = store_models.register(s, "smallcnn", "bbb", checksum="b" * 64, path=str(weights),
                                  params={"dataset": "ds"})
        other = store_models.register(s, "coldstart-thumb16", "thumb16", checksum="c" * 64)
    assert again.id == a.id and again.path == str(weights) and a.path is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.path = "x"
    with transaction(db_settings) as s:
        assert store_models.get(s, a.id) == dataclasses.replace(a, path=str(weights))
        assert store_models.get(s, str(b.id)).version == "bbb"  # digits: an id
        assert store_models.get(s, "smallcnn").id == b.id  # a name: the newest
        assert store_models.get(s, weights).id == b.id  # a recorded path: the newest
        assert store_models.find(s, "coldstart-thumb16").id == other.id
        assert store_models.by_version(s, "smallcnn", "aaa").id == a.id
        assert store_models.by_version(s, "smallcnn", "zzz") is None
        assert store_models.newest_trained_on(s, "ds").id == b.id and store_models.newest_trained_on(s, "x") is None
        assert store_models.paths(s) == [str(weights), str(weights)]
        with pytest.raises(NotFoundError, match=rf"model 999 does not exist \(known ids: \[{a.id}, {b.id}, {other.id}\]\)"):
            store_models.get(s, 999)


def test_embeddings_vectors_of_any_order_and_every_failure(db_settings, tmp_path):
    ds, _, ids = _dataset(db_settings, n=4)
    root = tmp_path / "emb"
    root.mkdir()
    with transaction(db_settings) as s:
        m = store_models.register(s, "m", "v", checksum="0" * 64)
        with pytest.raises(NotFoundError, match="curator embed"):
            store_emb.vectors_of(s, root, ds, m.id, ids[:1])
        assert store_emb.find(s, ds, m.id) is None
        info = store_emb.start(s, ds, m.id, dim=3, count=3)
    assert (info.done, info.count, info.dim, info.complete) == (0, 3, 3, False)
    vec_name, ids_name = store_emb.file_names(ds, m.id)
    stored = np.array(ids[:3], dtype=np.int64)
    E = np.arange(9, dtype=np.float32).reshape(3, 3)
    store_emb.open_array(root, ids_name, np.int64, (3,), "w+")[:] = stored
    store_emb.open_array(root, vec_name, np.float32, (3, 3), "w+")[:] = E
    with transaction(db_settings) as s:
        with pytest.raises(ValidationError, match="0/3 done"):  # unfinished sets are not read
            store_emb.vectors_of(s, root, ds, m.id, ids[:1])
        assert store_emb.newest_complete(s, ds) is None
        store_emb.set_done(s, ds, m.id, 3)
    with transaction(db_settings) as s:
        assert store_emb.newest_complete(s, ds).model_id == m.id
        assert store_emb.all_file_names(s) == {vec_name, ids_name}
        got = store_emb.vectors_of(s, root, ds, m.id, [ids[2], ids[0], ids[2]])
        assert got.dtype == np.float32 and np.array_equal(got, E[[2, 0, 2]])
        assert store_emb.vectors_of(s, root, ds, m.id, []).shape == (0, 3)
        with pytest.raises(store_emb.MissingSamples, match="lack 1 samples") as info:
            store_emb.vectors_of(s, root, ds, m.id, [ids[0], ids[3]])
        assert info.value.missing == [ids[3]]
    (root / vec_name).unlink()
    with transaction(db_settings) as s, pytest.raises(NotFoundError, match="is missing"):
        store_emb.vectors_of(s, root, ds, m.id, ids[:1])


def test_run_step_read_compute_write(db_settings):
    """Read and write each run in a transaction of their own, compute in none; a failure in
    compute or write leaves nothing written."""
    ds, _, ids = _dataset(db_settings, n=3)
    seen = []

    def read(s):
        seen.append(("read", s.in_transaction()))
        return store_samples.ids(s, ds)

    def compute(got):
        seen.append(("compute", got.tolist()))
        return {int(i): "1" for i in got}

    def write(s, answers):
        seen.append(("write", s.in_transaction()))
        return add_annotations(s, "t", answers)

    assert run_step(db_settings, read, compute, write) == 3
    assert seen == [("read", True), ("compute", ids), ("write", True)]

    def boom(_):
        raise ValidationError("bad")

    def write_then_fail(s, _):
        add_annotations(s, "u", {ids[0]: "0"})
        raise ValidationError("late")

    with pytest.raises(ValidationError, match="bad"):
        run_step(db_settings, read, boom, write)
    with pytest.raises(ValidationError, match="late"):
        run_step(db_settings, read, compute, write_then_fail)
    assert run_step(db_settings, lambda s: annotated_sample_ids(s, ids, tool="u")) == set()
    assert run_step(db_settings, lambda s: annotated_sample_ids(s, ids, tool="t")) == set(ids)
