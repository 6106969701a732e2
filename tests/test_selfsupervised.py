"""The self-supervised encoder of the pool and the calibrated dedup threshold (issue 16 items 1, 4):
planted copies land nearer their original than distinct samples; the calibration reads a
threshold between the two distributions and refuses a pool too small to read one from; a
killed training run resumes to the same weights; the encoder is reused until the pool grows by
the refresh share; the CLI stores the model and embedding set and dedups with the calibrated
threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SAMPLE, require
from curator import selfsupervised
from curator.dedup import calibrate_threshold
from curator.exceptions import ValidationError


def _digits(n, offset=0):
    from curator.ingest.idx import iter_images

    require(SAMPLE)
    _, images = next(iter_images(SAMPLE / "train-images-idx3-ubyte.gz", batch_size=offset + n))
    return np.asarray(images[offset:offset + n])


def _copy(img, kind, rng):
    """A copy made with PIL (not the training augmentations' code)."""
    import io

    from PIL import Image

    im = Image.fromarray(img)
    if kind == "rotate":
        return np.asarray(im.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR))
    if kind == "jpeg":
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=70)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    h, w = img.shape
    z = rng.uniform(0.92, 1.08)
    big = im.resize((round(w * z), round(h * z)), Image.Resampling.BILINEAR)
    out = Image.new("L", (w, h))
    out.paste(big, ((w - big.width) // 2, (h - big.height) // 2))
    return np.asarray(out)


@pytest.mark.slow
def test_planted_copies_are_nearer_than_distinct_samples():
    """300 digits (16 x 16, the bundled 1989 set) + 60 planted copies (rotation, zoom, JPEG), a short training on that pool: a
    copy is nearer its original than the original's nearest distinct digit, for most copies, and
    far more often than on the untrained network."""
    X = _digits(300)
    rng = np.random.default_rng(0)
    src = rng.choice(300, 60, replace=False)
    copies = np.stack([_copy(X[s], ("rotate", "zoom", "jpeg")[i % 3], rng) for i, s in enumerate(src)])
    pool = np.concatenate([X, copies])

    def share_nearer(enc):
        E = enc.embed(pool)
        O = E[:300]
        S = O @ O.T
        np.fill_diagonal(S, -1)
        nearest_distinct = S.max(axis=1)[src]
        copy_sim = (E[300:] * O[src]).sum(axis=1)
        return float((copy_sim > nearest_distinct).mean()), float(copy_sim.mean() - nearest_distinct.mean())

    trained = selfsupervised.train_encoder(pool, seed=0, steps=60, batch_size=64, progress=False, threads=2)
    untrained = selfsupervised.train_encoder(pool, seed=0, steps=1, batch_size=64, progress=False, threads=2)
    share, margin = share_nearer(trained)
    share0, _ = share_nearer(untrained)
    assert share >= 0.85 and margin > 0, (share, margin)
    assert share > share0 or share0 >= 0.95, (share, share0)
    assert trained.meta["loss_last"] < trained.meta["loss_first"]


def test_calibration_threshold_lies_between_the_distributions():
    rng = np.random.default_rng(0)
    copies = rng.uniform(0.93, 0.99, 400)
    distinct = rng.uniform(0.60, 0.88, 400)
    out = calibrate_threshold(copies, distinct)
    assert distinct.max() < out["threshold"] < copies.min()
    assert out["separated"] and out["expected_missed"] == 0 and out["expected_merged"] == 0
    # real copies already in the pool (10 % of the nearest neighbours) do not push the threshold up
    contaminated = distinct.copy()
    contaminated[:40] = rng.uniform(0.95, 0.99, 40)
    got = calibrate_threshold(copies, contaminated)
    assert distinct[40:].max() < got["threshold"] < copies.min()
    assert got["neighbours_taken_as_copies"] == int((contaminated >= np.quantile(copies, 0.01)).sum()) > 0
    # overlapping distributions: precision first (threshold above most distinct neighbours)
    over = calibrate_threshold(rng.uniform(0.80, 0.99, 400), rng.uniform(0.70, 0.95, 400))
    assert not over["separated"] and over["expected_merged"] <= 0.02


def test_calibration_refuses_a_pool_too_small_or_not_finite():
    with pytest.raises(ValidationError, match="at least 30"):
        calibrate_threshold(np.full(10, 0.95), np.full(10, 0.5))
    bad = np.full(50, 0.9)
    bad[3] = np.nan
    with pytest.raises(ValidationError, match="NaN"):
        calibrate_threshold(bad, np.full(50, 0.5))
    E = np.random.default_rng(0).normal(size=(12, 8))
    with pytest.raises(ValidationError, match="at least 30"):
        selfsupervised.calibrate(_digits(12), E, lambda imgs: np.random.default_rng(1).normal(size=(len(imgs), 8)))


def test_calibrate_on_a_pool_reads_its_own_embedding():
    """The thumbnail embedding of 120 digits: synthetic copies are similar to their originals, and
    the threshold is recorded with both distributions."""
    from curator import coldstart

    X = _digits(120)
    E = coldstart.embed_images(X)
    out = selfsupervised.calibrate(X, E, coldstart.embed_images, seed=0, samples=60)
    assert 0 < out["threshold"] <= 1 and out["samples"] == 60
    assert out["copy_similarity"]["q50"] > out["neighbour_similarity"]["q50"] - 0.2
    again = selfsupervised.calibrate(X, E, coldstart.embed_images, seed=0, samples=60)
    assert again["threshold"] == out["threshold"]  # seeded: the same samples and copies


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import torch

    X = _digits(64)
    kw = dict(seed=3, steps=6, batch_size=16, progress=False, threads=1, checkpoint_every=2)
    whole = selfsupervised.train_encoder(X, **kw)
    ckpt = tmp_path / "run.ckpt"
    real, calls = selfsupervised._nt_xent, []

    def dying(*a):
        calls.append(1)
        if len(calls) == 5:  # killed during step 5: steps 1-4 done, checkpoint at 4
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(selfsupervised, "_nt_xent", dying)
    with pytest.raises(KeyboardInterrupt):
        selfsupervised.train_encoder(X, checkpoint=ckpt, **kw)
    assert torch.load(ckpt, weights_only=True)["step"] == 4
    monkeypatch.setattr(selfsupervised, "_nt_xent", real)
    resumed = selfsupervised.train_encoder(X, checkpoint=ckpt, **kw)
    for (k, a), b in zip(whole.module.state_dict().items(), resumed.module.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    with pytest.raises(ValidationError, match="another training run"):
        selfsupervised.train_encoder(X, checkpoint=ckpt, **{**kw, "seed": 4})


def test_refresh_rule():
    from curator.selfsupervised_store import needs_refresh

    assert not needs_refresh(100, 100, 0.2)
    assert not needs_refresh(100, 120, 0.2)
    assert needs_refresh(100, 121, 0.2)
    with pytest.raises(ValidationError):
        needs_refresh(100, 200, 0)


def test_encoder_file_roundtrip_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(40, 48, 40, 3), dtype=np.uint8)
    enc = selfsupervised.train_encoder(X, seed=0, steps=2, batch_size=8, progress=False, threads=1)
    assert enc.input_spec.channels == 3 and enc.input_spec.size == (selfsupervised.MAX_SIDE,) * 2
    E = enc.embed(X[:5])
    assert E.shape == (5, selfsupervised.EMBED_DIM) and np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    back = selfsupervised.load_encoder(enc.save(tmp_path / "enc.pt"))
    assert np.allclose(back.embed(X[:5]), E, atol=1e-5) and back.version == enc.version
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ValidationError, match="not a curator encoder"):
        selfsupervised.load_encoder(tmp_path / "bad.pt")


@pytest.fixture
def ssl_data(db_settings, monkeypatch):
    from click.testing import CliRunner

    from curator.cli import cli
    from curator.ingest import ingest_arrays

    X = _digits(60)
    ingest_arrays(X[:40], np.zeros(40, np.int64), dataset="ssl", split="train", name="a", settings=db_settings)
    monkeypatch.setenv("CURATOR_WORKSPACE", str(db_settings.workspace))
    if db_settings.db_url:
        monkeypatch.setenv("CURATOR_DB_URL", db_settings.db_url)
    else:
        monkeypatch.delenv("CURATOR_DB_URL", raising=False)
    monkeypatch.setenv("CURATOR_PROGRESS", "0")
    return db_settings, X, lambda *a: CliRunner().invoke(cli, list(a))


@pytest.mark.slow
def test_embed_self_supervised_is_stored_reused_refreshed_and_dedups(ssl_data):
    from curator.ingest import ingest_arrays

    settings, X, run = ssl_data
    first = run("embed", "--dataset", "ssl", "--self-supervised", "--steps", "3", "--json")
    assert first.exit_code == 0, first.output
    a = json.loads(first.output)
    assert a["trained"] and a["count"] == a["done"] == 40 and a["dim"] == selfsupervised.EMBED_DIM
    again = json.loads(run("embed", "--dataset", "ssl", "--self-supervised", "--steps", "3", "--json").output)
    assert not again["trained"] and again["model_id"] == a["model_id"]
    # 8 more samples (20 %): still reused, its set recomputed to cover them
    ingest_arrays(X[40:48], np.zeros(8, np.int64), dataset="ssl", split="train", name="b", settings=settings)
    grown = json.loads(run("embed", "--dataset", "ssl", "--self-supervised", "--steps", "3", "--json").output)
    assert not grown["trained"] and grown["count"] == grown["done"] == 48
    ingest_arrays(X[48:60], np.zeros(12, np.int64), dataset="ssl", split="train", name="c", settings=settings)
    refreshed = json.loads(run("embed", "--dataset", "ssl", "--self-supervised", "--steps", "3", "--json").output)
    assert refreshed["trained"] and refreshed["model_id"] != a["model_id"] and refreshed["trained_on"] == 60

    out = run("dedup", "--dataset", "ssl", "--self-supervised", "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["threshold_source"] == "calibrated" and doc["threshold"] == doc["calibration"]["threshold"]
    assert doc["calibration"]["model_id"] == refreshed["model_id"] and doc["samples"] == 60
    given = json.loads(run("dedup", "--dataset", "ssl", "--self-supervised", "--threshold", "0.999", "--json").output)
    assert given["threshold"] == 0.999 and given["calibration"] is None


def test_cli_refuses_bad_combinations_in_one_line(ssl_data):
    _, _, run = ssl_data
    from curator.exceptions import CuratorError, NotFoundError

    out = run("dedup", "--dataset", "ssl", "--self-supervised")
    assert isinstance(out.exception, NotFoundError) and "curator embed --dataset ssl --self-supervised" in str(out.exception)
    out = run("embed", "--dataset", "ssl", "--steps", "3")
    assert isinstance(out.exception, CuratorError) and "--self-supervised" in str(out.exception)
    out = run("embed", "--dataset", "ssl", "--self-supervised", "--steps", "3", "--epochs", "1")
    assert isinstance(out.exception, CuratorError) and "not both" in str(out.exception)
