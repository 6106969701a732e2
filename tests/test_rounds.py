"""Workflows on a real database: train, score, select and record rounds; embeddings store; CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import func, select

from conftest import SAMPLE, require
from curator.exceptions import BudgetError, NotFoundError, ValidationError
from curator.store.schema import Annotation, EmbeddingSet, Round, RoundItem, Sample, Score
from curator.store.session import transaction

DS = "digits"


@pytest.fixture(scope="module")
def arrays():
    require(SAMPLE)
    from curator.ingest.idx import iter_images, read_labels

    _, X = next(iter_images(SAMPLE / "train-images-idx3-ubyte.gz", 240))
    y = read_labels(SAMPLE / "train-labels-idx1-ubyte.gz")[:240]
    _, Xt = next(iter_images(SAMPLE / "test-images-idx3-ubyte.gz", 60))
    yt = read_labels(SAMPLE / "test-labels-idx1-ubyte.gz")[:60]
    return np.array(X), y, np.array(Xt), yt


def _setup(settings, arrays, n_labeled=30):
    """Ingest the digits; give the first ``n_labeled`` training samples a human label."""
    from curator.ingest import ingest_arrays

    X, y, Xt, yt = arrays
    ingest_arrays(X, y, dataset=DS, split="train", name="train", settings=settings)
    ingest_arrays(Xt, yt, dataset=DS, split="test", name="test", settings=settings)
    with transaction(settings) as s:
        rows = s.execute(select(Sample.id, Sample.gt_label).where(Sample.split == "train")
                         .order_by(Sample.id).limit(n_labeled)).all()
        s.add_all([Annotation(sample_id=i, tool="test", external_id=f"a{i}", label=g) for i, g in rows])
    return [i for i, _ in rows], [g for _, g in rows]


def _ds(settings):
    from curator.store.queries import dataset_id

    with transaction(settings) as s:
        return dataset_id(s, DS)


def _counts(settings):
    with transaction(settings) as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Round, RoundItem, Score))


@pytest.mark.slow
def test_train_score_select_record(db_settings, arrays):
    from curator import rounds

    ids, labels = _setup(db_settings, arrays)
    model = rounds.train_model(db_settings, DS, ids, labels, seed=0, steps=30)
    assert model.model_id > 0 and model.classes[:3] == ["0", "1", "2"]
    err = rounds.test_error(db_settings, DS, model, split="test")
    # chance is 0.9 (10 classes); 30 labels and 30 steps gave 0.45-0.60 over seeds 0-2, and a
    # model at chance would score >= 0.8 on these 60 test digits (binomial sd 0.04)
    assert 0.0 <= err < 0.75

    scored = rounds.score_pool(db_settings, DS, model, split="train", mc_samples=4, seed=0)
    assert len(scored.sample_ids) == 240 - 30 and not set(scored.sample_ids) & set(ids)
    assert {"entropy", "margin", "bald", "novelty", "variation_ratio"} <= set(scored.scores)
    n_scores = _counts(db_settings)[2]
    assert n_scores == len(scored.sample_ids) * (len(scored.scores) + 2)  # + prediction, confidence
    from sqlalchemy import select as _select

    from curator.store.schema import Score
    with transaction(db_settings) as s:
        stored = dict(s.execute(_select(Score.sample_id, Score.value).where(Score.kind == "prediction")).all())
        conf = dict(s.execute(_select(Score.sample_id, Score.value).where(Score.kind == "confidence")).all())
    probs = scored.pool.mean_probs
    assert [stored[int(i)] for i in scored.sample_ids] == [float(k) for k in probs.argmax(1)]
    assert np.allclose([conf[int(i)] for i in scored.sample_ids], probs.max(1))
    rounds.score_pool(db_settings, DS, model, split="train", mc_samples=4, seed=0)
    assert _counts(db_settings)[2] == n_scores  # scoring again replaces, never duplicates

    r1 = rounds.select_round(db_settings, DS, model, budget=8, policy="curator", seed=3, split="train",
                             mc_samples=4)
    assert r1.number == 1 and len(r1.sample_ids) == 8 and len(set(r1.sample_ids)) == 8
    assert not set(r1.sample_ids) & set(ids)
    with transaction(db_settings) as s:
        rnd = s.get(Round, r1.round_id)
        assert (rnd.policy, rnd.seed, rnd.budget, rnd.model_id, rnd.status) == ("curator", 3, 8, model.model_id,
                                                                                 "selected")
        assert rnd.params["novelty_weight"] == 0.3 and rnd.params["pool_size"] == 210
        items = rounds.round_items(s, DS, 1)
    assert [r for r, _, _ in items] == list(range(8))
    assert [sid for _, sid, _ in items] == r1.sample_ids
    scores = [sc for _, _, sc in items]
    assert all(sc is not None for sc in scores) and scores == sorted(scores, reverse=True)

    # the next round does not pick what waits for labels, and is reproducible from its seed
    r2 = rounds.select_round(db_settings, DS, model, budget=5, policy="margin", seed=0, split="train",
                             mc_samples=0)
    assert r2.number == 2 and not set(r2.sample_ids) & set(r1.sample_ids)
    assert r2.pool_size == 210 - 8


@pytest.mark.slow
def test_failed_round_writes_nothing(settings, arrays):
    from curator import rounds

    ids, labels = _setup(settings, arrays)
    model = rounds.train_model(settings, DS, ids, labels, seed=0, steps=5)
    before = _counts(settings)
    with pytest.raises(BudgetError, match="larger than the pool"):
        rounds.select_round(settings, DS, model, budget=500, policy="entropy", split="train", mc_samples=0)
    with pytest.raises(NotFoundError, match="unknown policy 'entrpy'"):
        rounds.select_round(settings, DS, model, budget=5, policy="entrpy")
    with pytest.raises(ValidationError, match="needs mc_probs"):
        rounds.select_round(settings, DS, model, budget=5, policy="bald", split="train", mc_samples=0)
    with pytest.raises(NotFoundError, match="dataset 'nope' does not exist"):
        rounds.select_round(settings, "nope", model, budget=5)
    with pytest.raises(ValidationError, match="not classes of the model"):
        rounds.train_model(settings, DS, ids[:2], ["0", "cat"], init=model)
    assert _counts(settings) == before


@pytest.mark.slow
def test_embeddings_once_per_model_and_resumable(db_settings, arrays, monkeypatch):
    from curator import embeddings, rounds

    ids, labels = _setup(db_settings, arrays)
    model = rounds.train_model(db_settings, DS, ids, labels, seed=0, steps=5)
    adapter = model.adapter
    real_embed = adapter.embed
    calls = {"n": 0}

    def flaky(images):
        calls["n"] += 1
        if calls["n"] == 4:  # dim probe + two batches, then the "crash"
            raise KeyboardInterrupt
        return real_embed(images)

    monkeypatch.setattr(adapter, "embed", flaky)
    with pytest.raises(KeyboardInterrupt):
        embeddings.compute_embeddings(db_settings, DS, adapter, model_id=model.model_id, batch_size=64)
    with transaction(db_settings) as s:
        row = s.scalar(select(EmbeddingSet))
        assert (row.done, row.count) == (128, 300)
        assert embeddings.load_latest(s, db_settings, row.dataset_id) is None  # incomplete sets are not used
    monkeypatch.setattr(adapter, "embed", real_embed)
    info = embeddings.compute_embeddings(db_settings, DS, adapter, model_id=model.model_id, batch_size=64)
    assert info.complete and info.count == 300
    with transaction(db_settings) as s:
        sample_ids, E = embeddings.load_latest(s, db_settings, info.dataset_id)
        uris = dict(s.execute(select(Sample.id, Sample.uri)).all())
    assert E.shape == (300, info.dim) and np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    from curator.images import load_images

    fresh = adapter.embed(load_images([uris[int(i)] for i in sample_ids[120:140]]))
    assert np.allclose(E[120:140], fresh, atol=1e-5)  # resumed rows equal a fresh computation
    # a second call finds the work done
    monkeypatch.setattr(adapter, "embed", lambda images: pytest.fail("recomputed"))
    assert embeddings.compute_embeddings(db_settings, DS, adapter, model_id=model.model_id).complete


@pytest.mark.slow
def test_cli_policies_score_select_embed(settings, arrays, monkeypatch):
    from click.testing import CliRunner

    from curator import rounds
    from curator.cli import cli

    ids, labels = _setup(settings, arrays)
    model = rounds.train_model(settings, DS, ids, labels, seed=0, steps=5)
    monkeypatch.setenv("CURATOR_WORKSPACE", str(settings.workspace))
    run = CliRunner().invoke

    res = run(cli, ["policies", "--json"])
    assert res.exit_code == 0, res.output
    names = {r["name"]: r for r in json.loads(res.output)}
    assert names["bald"]["requires"] == ["mc_probs"] and names["curator"]["origin"] == "built-in"

    res = run(cli, ["score", "--dataset", DS, "--model", model.path, "--split", "train", "--mc", "4", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["pool"] == 210 and "bald" in out["scores"]

    res = run(cli, ["select", "--dataset", DS, "-n", "6", "--model", str(model.model_id), "--policy", "kcenter",
                    "--split", "train", "--mc", "0", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["round"] == 1 and len(out["sample_ids"]) == 6

    res = run(cli, ["select", "--dataset", DS, "-n", "3", "--policy", "novelty", "--param", "k=2", "--split", "train",
                    "--mc", "0", "--steps", "5", "--json"])  # no --model: trains on the current labels
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["round"] == 2

    res = run(cli, ["select", "--dataset", DS, "-n", "3", "--policy", "nope", "--model", model.path])
    assert res.exit_code != 0 and isinstance(res.exception, NotFoundError)
    res = run(cli, ["select", "--dataset", DS, "-n", "3", "--policy", "margin", "--param", "oops", "--model", model.path])
    assert isinstance(res.exception, ValidationError) and "NAME=VALUE" in str(res.exception)

    res = run(cli, ["embed", "--dataset", DS, "--model", model.path, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["done"] == 300


@pytest.mark.slow
def test_round_holds_no_near_copies_of_each_other_or_of_labeled(settings, arrays):
    """Planted copies (brightness shifts of real digits) never reach a round; the count is recorded."""
    from curator import rounds
    from curator.ingest import ingest_arrays

    ids, labels = _setup(settings, arrays)
    X, y, _, _ = arrays
    shift = lambda img, d: np.clip(img.astype(np.int16) + d, 0, 255).astype(np.uint8)  # noqa: E731
    planted = np.stack([shift(X[0], 8), shift(X[1], 8), shift(X[2], 8),  # copies of labeled samples
                        shift(X[100], 5), shift(X[100], 10)])              # two copies of a pool sample
    ingest_arrays(planted, list(y[[0, 1, 2, 100, 100]]), dataset=DS, split="train", name="copies",
                  settings=settings)
    with transaction(settings) as s:
        copies = s.scalars(select(Sample.id).where(Sample.uri.contains("copies")).order_by(Sample.id)).all()
        original = s.scalars(select(Sample.id).where(Sample.split == "train").order_by(Sample.id)).all()[100]
    assert len(copies) == 5

    model = rounds.train_model(settings, DS, ids, labels, seed=0, steps=5)
    with transaction(settings) as s:
        ds = rounds.dataset_id(s, DS)
        pool, taken = rounds.pool_ids(s, ds, "train")
    kept, removed = rounds.drop_duplicates_in(settings, ds, pool, taken)
    kept = set(kept.tolist())
    assert not kept & set(copies[:3])                                  # copies of labeled samples
    assert len(kept & {original, *copies[3:]}) == 1                    # one of the group of three
    assert removed == len(pool) - len(kept) >= 5

    everything = rounds.select_round(settings, DS, model, budget=len(kept), policy="random", split="train",
                                     mc_samples=0)
    assert set(everything.sample_ids) == kept and everything.duplicates_removed == removed
    with transaction(settings) as s:
        params = s.get(Round, everything.round_id).params
    assert params["duplicates_removed"] == removed and params["pool_size"] == len(pool)


@pytest.mark.slow
def test_select_reuses_a_scored_pool_and_refuses_a_stale_one(settings, arrays):
    from curator import rounds

    ids, labels = _setup(settings, arrays)
    model = rounds.train_model(settings, DS, ids, labels, seed=0, steps=5)
    scored = rounds.score_pool(settings, DS, model, split="train", mc_samples=3, seed=1, record=False)
    def forget_rounds():  # so the pool is as it was scored
        with transaction(settings) as s:
            s.execute(RoundItem.__table__.delete())
            s.execute(Round.__table__.delete())

    # the same model outputs (MC dropout is seeded per batch of the same samples): the same choice
    kw = dict(budget=6, policy="bald", seed=1, split="train", mc_samples=3, dedup=False)
    fresh = rounds.select_round(settings, DS, model, **kw)
    forget_rounds()
    assert rounds.select_round(settings, DS, model, scored=scored, **kw).sample_ids == fresh.sample_ids
    forget_rounds()
    with transaction(settings) as s:
        pool, taken = rounds.pool_ids(s, rounds.dataset_id(s, DS), "train")
    kept, removed = rounds.drop_duplicates_in(settings, _ds(settings), pool, taken)
    reused = rounds.select_round(settings, DS, model, scored=scored, **{**kw, "dedup": True})
    assert set(reused.sample_ids) <= set(kept.tolist()) and reused.duplicates_removed == removed
    with pytest.raises(ValidationError, match="scored pool is stale"):  # round 1 took samples of it
        rounds.select_round(settings, DS, model, budget=6, policy="bald", split="train", scored=scored)


def test_coldstart_vectors_are_read_from_the_store_once_computed(settings, arrays, monkeypatch):
    from curator import coldstart, embeddings

    _setup(settings, arrays)
    ds = _ds(settings)
    with transaction(settings) as s:
        some = np.array(s.scalars(select(Sample.id).order_by(Sample.id)).all()[5:25:3], dtype=np.int64)
    direct = embeddings.coldstart_vectors(settings, ds, some)  # nothing stored: from the images
    embeddings.compute_embeddings(settings, DS, embeddings.ColdStartEmbedder())

    def no_images(paths, *a, **k):
        raise AssertionError("the images were read again")

    monkeypatch.setattr(coldstart, "embed_paths", no_images)
    stored = embeddings.coldstart_vectors(settings, ds, some)
    unit = direct / np.linalg.norm(direct, axis=1, keepdims=True)
    assert stored.shape == direct.shape and np.allclose(stored, unit, atol=1e-5)
