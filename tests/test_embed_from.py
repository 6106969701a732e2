"""Precomputed embeddings and predictions (issue 15 item 3): ``curator embed --from`` and
``curator score --from`` import .npy + ids, .npz, Parquet and a FiftyOne field; selection,
novelty and dedup then run on the stored set without a model; every bad file is one clear
error and stores nothing (no row, no file)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from conftest import SAMPLE, require
from curator.exceptions import CuratorError
from curator.store.schema import EmbeddingSet, Model, Round, Sample, Score
from curator.store.session import transaction

DS = "pre"
N = 40


@pytest.fixture
def data(db_settings, monkeypatch):
    """A 40-sample dataset (30 train, 10 test); the CLI pointed at its database."""
    from curator.cli import cli
    from curator.ingest import ingest_arrays
    from curator.ingest.idx import iter_images, read_labels

    require(SAMPLE)
    for split, n in (("train", 30), ("test", 10)):
        _, images = next(iter_images(SAMPLE / f"{split}-images-idx3-ubyte.gz", batch_size=n))
        ingest_arrays(np.asarray(images), read_labels(SAMPLE / f"{split}-labels-idx1-ubyte.gz")[:n], dataset=DS,
                      split=split, name=split, settings=db_settings)
    monkeypatch.setenv("CURATOR_WORKSPACE", str(db_settings.workspace))
    if db_settings.db_url:
        monkeypatch.setenv("CURATOR_DB_URL", db_settings.db_url)
    else:
        monkeypatch.delenv("CURATOR_DB_URL", raising=False)
    with transaction(db_settings) as s:
        ids, uris = zip(*s.execute(select(Sample.id, Sample.uri).order_by(Sample.id)).all())
    from curator.store.samples import classes
    from curator.store.queries import dataset_id

    with transaction(db_settings) as s:
        names = classes(s, dataset_id(s, DS))
    return db_settings, np.array(ids), list(uris), names, lambda *a: CliRunner().invoke(cli, list(a))


def _vectors(n=N, d=8, seed=0):
    E = np.random.default_rng(seed).normal(size=(n, d))
    E[5] = E[3] * 2.0  # a planted near copy: same direction
    return E


def _stored(settings):
    """(models, embedding sets, scores, rounds, files in the embeddings folder)."""
    with transaction(settings) as s:
        counts = tuple(s.scalar(select(func.count()).select_from(t)) for t in (Model, EmbeddingSet, Score, Round))
    folder = settings.embeddings_dir
    files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return (*counts, files)


def _refused(res, *needles):
    assert res.exit_code != 0 and isinstance(res.exception, CuratorError), (res.output, res.exception)
    msg = str(res.exception)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


@pytest.mark.slow
def test_npz_import_then_dedup_select_novelty_without_a_model(data, tmp_path):
    settings, ids, uris, _, run = data
    E = _vectors()
    order = np.random.default_rng(1).permutation(N)  # rows in any order: matched by id
    np.savez(tmp_path / "emb.npz", embeddings=E[order], ids=ids[order])
    res = run("embed", "-d", DS, "--from", str(tmp_path / "emb.npz"), "--name", "clip", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["count"], out["dim"], out["done"]) == (N, 8, N)
    from curator.store import embeddings as store_emb
    from curator.store.queries import dataset_id

    with transaction(settings) as s:
        got_ids, got = store_emb.load(s, settings.embeddings_dir, dataset_id(s, DS), out["model_id"])
        assert np.array_equal(got_ids, ids)
        assert np.allclose(got, E / np.linalg.norm(E, axis=1, keepdims=True), atol=1e-6)
        params = s.scalar(select(Model.params).where(Model.id == out["model_id"]))
    assert params["kind"] == "precomputed"
    before = _stored(settings)
    again = run("embed", "-d", DS, "--from", str(tmp_path / "emb.npz"), "--name", "clip", "--json")
    assert again.exit_code == 0 and json.loads(again.output)["model_id"] == out["model_id"]
    assert _stored(settings) == before  # the same file again stores nothing twice

    res = run("dedup", "-d", DS, "--embeddings", "clip", "--threshold", "0.999", "--json")
    assert res.exit_code == 0, res.output
    dd = json.loads(res.output)
    assert dd["embedding"] == "set clip" and [int(ids[3]), int(ids[5])] in dd["sample_ids"]

    res = run("select", "-d", DS, "-n", "4", "--embeddings", "clip", "--policy", "kcenter", "--split", "train",
              "--json")
    assert res.exit_code == 0, res.output
    sel = json.loads(res.output)
    assert sel["model_id"] == out["model_id"] and len(sel["sample_ids"]) == 4
    assert not ({int(ids[3]), int(ids[5])} <= set(sel["sample_ids"]))  # dedup ran on the candidates first
    res = run("select", "-d", DS, "-n", "3", "--embeddings", "newest", "--policy", "novelty", "--split", "train",
              "--json")
    assert res.exit_code == 0, res.output
    _refused(run("select", "-d", DS, "-n", "3", "--embeddings", "clip", "--policy", "entropy"),
             "policy 'entropy' needs probs")
    _refused(run("select", "-d", DS, "-n", "3", "--embeddings", "nope", "-p", "kcenter"), "no embedding set 'nope'",
             "curator embed --dataset pre --from FILE --name nope")
    _refused(run("score", "-d", DS, "--model", str(out["model_id"])), "imported embeddings or predictions")


@pytest.mark.slow
def test_npy_with_ids_parquet_and_uris_import(data, tmp_path):
    settings, ids, uris, _, run = data
    E = _vectors(d=6)
    np.save(tmp_path / "e.npy", E)
    (tmp_path / "uris.txt").write_text("\n".join(uris) + "\n")
    res = run("embed", "-d", DS, "--from", str(tmp_path / "e.npy"), "--ids", str(tmp_path / "uris.txt"), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["dim"] == 6
    np.save(tmp_path / "ids.npy", ids[::-1])
    np.save(tmp_path / "e2.npy", E[::-1] + 1.0)
    res = run("embed", "-d", DS, "--from", str(tmp_path / "e2.npy"), "--ids", str(tmp_path / "ids.npy"),
              "--name", "e", "--json")  # the same name, new content: a new version of set "e"
    assert res.exit_code == 0, res.output

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"uri": uris, "embedding": [list(r) for r in E]}), tmp_path / "e.parquet")
    res = run("embed", "-d", DS, "--from", str(tmp_path / "e.parquet"), "--name", "pq", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["count"] == N
    pq.write_table(pa.table({"id": ids.tolist(), "vec": [list(r) for r in E]}), tmp_path / "bad.parquet")
    _refused(run("embed", "-d", DS, "--from", str(tmp_path / "bad.parquet")), "needs 'id'", "'embedding'")


BAD_EMBEDDINGS = {
    "wrong-length": (lambda E, ids: dict(embeddings=E, ids=ids[:-1]), "40 rows of embeddings but 39 ids"),
    "nan": (lambda E, ids: dict(embeddings=np.where(np.arange(N)[:, None] == 7, np.nan, E), ids=ids),
            "hold NaN or infinite values"),
    "unknown-ids": (lambda E, ids: dict(embeddings=E, ids=np.r_[ids[:-1], 999999]), "are not samples of the dataset"),
    "duplicate-ids": (lambda E, ids: dict(embeddings=E, ids=np.r_[ids[:-1], ids[0]]), "duplicate sample ids"),
    "missing-ids": (lambda E, ids: dict(embeddings=E[:-1], ids=ids[:-1]), "have no row"),
    "one-dim": (lambda E, ids: dict(embeddings=E[:, 0], ids=ids), "must be 2-D"),
    "text": (lambda E, ids: dict(embeddings=E.astype(str), ids=ids), "not numbers"),
    "no-ids": (lambda E, ids: dict(embeddings=E), "needs 'embeddings' and 'ids'"),
    "zero-row": (lambda E, ids: dict(embeddings=np.where(np.arange(N)[:, None] == 2, 0.0, E), ids=ids), "all zeros"),
}


@pytest.mark.slow
def test_bad_embeddings_each_one_line_and_nothing_stored(data, tmp_path):
    settings, ids, uris, _, run = data
    E = _vectors()
    np.savez(tmp_path / "good.npz", embeddings=E, ids=ids)
    assert run("embed", "-d", DS, "--from", str(tmp_path / "good.npz"), "--name", "clip").exit_code == 0
    before = _stored(settings)
    for case, (make, needle) in BAD_EMBEDDINGS.items():
        path = tmp_path / f"{case}.npz"
        np.savez(path, **make(E, ids))
        _refused(run("embed", "-d", DS, "--from", str(path), "--name", "clip"), needle)
        assert _stored(settings) == before, case
    np.savez(tmp_path / "wide.npz", embeddings=np.c_[E, E], ids=ids)  # the same name, another width
    _refused(run("embed", "-d", DS, "--from", str(tmp_path / "wide.npz"), "--name", "clip"),
             "16-d embeddings, but embedding set 'clip'", "has 8")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * N, dtype=object))  # pickled objects are never loaded
    np.save(tmp_path / "ids.npy", ids)
    _refused(run("embed", "-d", DS, "--from", str(tmp_path / "obj.npy"), "--ids", str(tmp_path / "ids.npy")),
             "pickled")
    _refused(run("embed", "-d", DS, "--from", str(tmp_path / "good.npy")), "no such file")
    np.save(tmp_path / "plain.npy", E)
    _refused(run("embed", "-d", DS, "--from", str(tmp_path / "plain.npy")), "pass --ids FILE")
    _refused(run("embed", "-d", DS, "--from", str(tmp_path / "good.npz"), "--name", "smallcnn-x", "--model", "1"),
             "drop --model")
    assert _stored(settings) == before


@pytest.mark.slow
def test_score_from_probabilities_stored_as_scores_and_bad_ones_refused(data, tmp_path):
    settings, ids, uris, classes, run = data
    k = len(classes)
    logits = np.random.default_rng(2).normal(size=(N, k))
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.savez(tmp_path / "p.npz", probs=P, ids=ids)
    before = _stored(settings)
    res = run("score", "-d", DS, "--from", str(tmp_path / "p.npz"), "--name", "teacher", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["imported"] == N
    with transaction(settings) as s:
        got = dict(s.execute(select(Score.sample_id, Score.value).where(Score.model_id == out["model_id"],
                                                                       Score.kind == "entropy")).all())
        pred = dict(s.execute(select(Score.sample_id, Score.value).where(Score.model_id == out["model_id"],
                                                                        Score.kind == "prediction")).all())
    entropy = -(P * np.log(P)).sum(1)
    assert np.allclose([got[int(i)] for i in ids], entropy, atol=1e-6)
    assert [int(pred[int(i)]) for i in ids] == P.argmax(1).tolist()

    after = _stored(settings)
    bad = {
        "logits": (dict(probs=np.abs(logits), ids=ids), "do not sum to 1"),
        "negative": (dict(probs=logits, ids=ids), "negative probabilities"),
        "classes": (dict(probs=np.c_[P, np.zeros(N)], ids=ids), f"{k + 1} probability columns but the dataset has {k}"),
        "nan": (dict(probs=np.where(np.arange(N)[:, None] == 1, np.nan, P), ids=ids), "NaN"),
        "unknown": (dict(probs=P, ids=ids + 100000), "are not samples of the dataset"),
    }
    for case, (arrays, needle) in bad.items():
        np.savez(tmp_path / f"{case}.npz", **arrays)
        _refused(run("score", "-d", DS, "--from", str(tmp_path / f"{case}.npz"), "--name", "teacher"), needle)
        assert _stored(settings) == after, case
    assert after[2] - before[2] == N * 6  # entropy, margin, least_confidence, variation_ratio, prediction, confidence


@pytest.mark.fiftyone
@pytest.mark.slow
def test_fiftyone_field_import(data, fiftyone_db, tmp_path):
    settings, ids, uris, _, run = data
    import fiftyone as fo

    name = f"pre-{tmp_path.name[-8:]}"
    ds = fo.Dataset(name)
    E = _vectors(d=5)
    ds.add_samples([fo.Sample(filepath=u, emb=E[i].tolist()) for i, u in enumerate(uris)])
    try:
        res = run("embed", "-d", DS, "--from", f"fiftyone:{name}.emb", "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["dim"] == 5
        _refused(run("embed", "-d", DS, "--from", f"fiftyone:{name}.nofield"), "has no field 'nofield'")
    finally:
        ds.delete()


def test_select_on_imported_probabilities_without_a_model(data, tmp_path):
    """`curator select --probs NAME` ranks the pool by the imported probabilities: no model is
    trained or run, and the uncertainty picks are those the imported matrix says."""
    settings, ids, uris, classes, run = data
    k = len(classes)
    rng = np.random.default_rng(7)
    sharp = rng.uniform(0.5, 12.0, size=N)  # per-row temperature: a spread of entropies
    logits = rng.normal(size=(N, k)) * sharp[:, None]
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    np.savez(tmp_path / "p.npz", probs=P, ids=ids)
    res = run("score", "-d", DS, "--from", str(tmp_path / "p.npz"), "--name", "teacher", "--json")
    assert res.exit_code == 0, res.output
    models_before = _stored(settings)[0]

    res = run("select", "-d", DS, "--probs", "teacher", "--policy", "entropy", "-n", "5", "--no-dedup", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    entropy = -(P * np.log(np.clip(P, 1e-12, None))).sum(1)
    assert out["pool"] == N
    assert out["sample_ids"] == [int(ids[i]) for i in np.argsort(-entropy, kind="stable")[:5]]
    assert np.allclose(out["scores"], np.sort(entropy)[::-1][:5], atol=1e-5)
    assert _stored(settings)[0] == models_before  # no model trained or registered

    # the next round, by margin, on what is left: the smallest margins among the rest
    res = run("select", "-d", DS, "--probs", "teacher", "--policy", "margin", "-n", "3", "--no-dedup", "--json")
    assert res.exit_code == 0, res.output
    top2 = np.sort(P, 1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    left = [i for i in range(N) if int(ids[i]) not in set(out["sample_ids"])]
    want = sorted(left, key=lambda i: margin[i])[:3]
    assert json.loads(res.output)["sample_ids"] == [int(ids[i]) for i in want]

    _refused(run("select", "-d", DS, "--probs", "teacher", "--policy", "kcenter", "-n", "2"),
             "policy 'kcenter' needs embeddings", "imported predictions do not give")
    _refused(run("select", "-d", DS, "--probs", "nobody", "--policy", "entropy", "-n", "2"),
             "no imported predictions named 'nobody'", "curator score --from FILE --name nobody")
    _refused(run("select", "-d", DS, "--probs", "teacher", "--model", "smallcnn", "-n", "2"), "drop --model")
