"""The built-in CNN records the input size it was trained at (with its channels and mean/std) in its
file and its stored params, and a pool of another image size is resized through that spec."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLE


def _digits(n: int = 160):
    """The bundled 16x16 digits at 28x28 (the size the model is trained at here)."""
    from curator.ingest.idx import iter_images, read_labels

    _, images = next(iter_images(SAMPLE / "train-images-idx3-ubyte.gz", n))
    return _bigger(np.asarray(images), 28), read_labels(SAMPLE / "train-labels-idx1-ubyte.gz")[:n].astype(np.int64)


def _bigger(images: np.ndarray, side: int = 40) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).resize((side, side), Image.Resampling.BILINEAR))
                     for im in images])


def test_trained_cnn_records_its_input_and_keeps_it_through_its_file(tmp_path):
    from curator.models import train_classifier
    from curator.models.cnn import SmallCNN, load_classifier

    X, y = _digits(64)
    assert SmallCNN().input_spec.size is None  # untrained: nothing learnt at any size yet
    adapter = train_classifier(X, y, num_classes=10, steps=5, seed=0)
    assert adapter.input_spec.size == (28, 28) and adapter.input_spec.channels == 1
    record = adapter.input_record()
    assert record["size"] == [28, 28] and record["channels"] == 1 and record["normalised_by"] == "model"
    assert record["mean"][0] == pytest.approx(float((X / 255.0).mean()), abs=1e-4)
    again = load_classifier(adapter.save(tmp_path / "m.pt"))
    assert again.input_spec.size == (28, 28)
    P = adapter.predict_proba(_bigger(X[:8]))  # 40x40 uint8 arrays: resized to 28x28 on the way in
    assert np.allclose(P, adapter.predict_proba(_resized(_bigger(X[:8]))), atol=1e-5)
    # warm start keeps the recorded size
    warm = train_classifier(X, y, num_classes=10, steps=2, seed=1, init=adapter)
    assert warm.input_spec.size == (28, 28)


def _resized(images: np.ndarray, side: int = 28) -> np.ndarray:
    """What the spec does, done by hand: float [0, 1] images at the model's size (passed as is)."""
    import torch

    x = torch.from_numpy(images.astype(np.float32) / 255)[:, None]
    x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return x.numpy()


@pytest.mark.slow
def test_model_trained_at_28_scores_a_pool_of_40x40_images(db_settings):
    """A pool of 40x40 files is decoded at the model's 28x28 (not at the pool's own size), so the
    model sees its digits at the scale it learnt them; the stored params say which size that was."""
    from curator import ingest_arrays, rounds
    from curator.steps import run_step
    from curator.store import models as store_models
    from curator.store import samples as store_samples
    from curator.store.queries import dataset_id

    X, y = _digits(220)
    ingest_arrays(X[:160], y[:160], dataset="small", name="small", split="train", settings=db_settings)
    ids = run_step(db_settings, lambda s: store_samples.ids(s, dataset_id(s, "small")))
    trained = rounds.train_model(db_settings, "small", ids, [str(v) for v in y[:160]], steps=150)
    assert trained.adapter.input_spec.size == (28, 28)
    row = run_step(db_settings, lambda s: store_models.get(s, trained.model_id))
    assert row.params["input_spec"]["size"] == [28, 28] and row.params["input_spec"]["channels"] == 1

    test_x, test_y = X[160:], y[160:]
    ingest_arrays(_bigger(test_x), test_y, dataset="big", name="big", split="train", settings=db_settings)
    scored = rounds.score_pool(db_settings, "big", trained, mc_samples=0)
    order = np.argsort(scored.sample_ids)  # ingest order
    pred = np.asarray(scored.pool.probs)[order].argmax(1)
    probs = trained.adapter.predict_proba(_resized(_bigger(test_x)))
    # the pool's predictions are those of the digits resized to 28x28 ...
    assert (pred == probs.argmax(1)).mean() >= 0.95
    # ... not those of the digits at 40x40 (what decoding at the pool's own size gave)
    native = trained.adapter.predict_proba(_bigger(test_x).astype(np.float32)[:, None] / 255).argmax(1)
    acc, acc_native = (pred == test_y).mean(), (native == test_y).mean()
    assert acc >= 0.6 and acc > acc_native + 0.1, (acc, acc_native)
