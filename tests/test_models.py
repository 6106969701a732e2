"""Model adapters: MC dropout, wrapping a user module, the built-in CNN (seeded, saved, loaded)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SAMPLE, require
from curator.exceptions import ValidationError

import torch  # a core dependency: missing torch must fail, never skip

nn = torch.nn


@pytest.fixture(scope="module")
def digits():
    """The bundled 16x16 MNIST-1989 sample: 400 training and 300 test digits."""
    require(SAMPLE)
    from curator.ingest.idx import iter_images, read_labels

    _, Xtr = next(iter_images(SAMPLE / "train-images-idx3-ubyte.gz", 400))
    ytr = read_labels(SAMPLE / "train-labels-idx1-ubyte.gz")[:400].astype(np.int64)
    _, Xte = next(iter_images(SAMPLE / "test-images-idx3-ubyte.gz", 300))
    yte = read_labels(SAMPLE / "test-labels-idx1-ubyte.gz")[:300].astype(np.int64)
    return Xtr, ytr, Xte, yte


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 32), nn.BatchNorm1d(32), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        return self.out(self.drop(self.body(x)))


def test_mc_dropout_turns_on_dropout_only_and_restores_modes():
    from curator.models import mc_dropout

    net = UserNet().eval()
    bn = net.body[2]
    with mc_dropout(net):
        assert net.drop.training and not bn.training and not net.training
    assert not net.drop.training and not net.training
    net.train()
    with mc_dropout(net):
        assert not bn.training
    assert bn.training and net.drop.training


def test_user_module_adapter_gives_pool_arrays(digits):
    from curator import Pool, policies
    from curator.models import ModelAdapter, TorchAdapter

    Xtr, *_ = digits
    net = UserNet()
    adapter = TorchAdapter(net, feature_layer="body", batch_size=128, device="cpu")
    assert isinstance(adapter, ModelAdapter)
    running_mean = net.body[2].running_mean.clone()
    pred = adapter.predict(Xtr[:200], mc_samples=5, seed=3)
    assert pred.probs.shape == (200, 10) and pred.embeddings.shape == (200, 32)
    assert pred.mc_probs.shape == (5, 200, 10)
    assert np.allclose(pred.probs.sum(1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(pred.embeddings, axis=1), 1, atol=1e-5)
    assert torch.equal(running_mean, net.body[2].running_mean)  # batch norm stayed in eval mode
    assert not np.allclose(pred.mc_probs[0], pred.mc_probs[1])  # passes differ: dropout was on
    again = adapter.predict(Xtr[:200], mc_samples=5, seed=3)
    assert np.array_equal(pred.mc_probs, again.mc_probs)  # seeded
    pool = Pool(embeddings=pred.embeddings, probs=pred.probs, mc_probs=pred.mc_probs)
    assert len(policies.get("bald").select(pool, budget=5, seed=0)) == 5
    with pytest.raises(ValidationError, match="feature_layer 'fc9' is not a submodule.*body"):
        TorchAdapter(net, feature_layer="fc9")
    with pytest.raises(ValidationError, match="mc_samples"):
        adapter.predict(Xtr[:4], mc_samples=1)


@pytest.mark.slow
def test_builtin_cnn_learns_is_seeded_and_round_trips(digits, tmp_path):
    from curator.models import load_classifier, train_classifier

    Xtr, ytr, Xte, yte = digits
    state = torch.random.get_rng_state()
    kw = dict(num_classes=10, steps=8, batch_size=32, channels=(8, 16), device="cpu")
    b1 = train_classifier(Xtr, ytr, seed=1, **kw)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    b2 = train_classifier(Xtr, ytr, seed=1, **kw)
    b3 = train_classifier(Xtr, ytr, seed=2, **kw)
    assert b1.version == b2.version and b1.version != b3.version
    a = train_classifier(Xtr, ytr, num_classes=10, seed=1, steps=80, batch_size=32, channels=(8, 16),
                         device="cpu")
    err = a.evaluate(Xte, yte)
    assert err < 0.6  # chance is 0.9: it learns from 80 small steps
    path = a.save(tmp_path / "m.pt")
    loaded = load_classifier(path)
    assert loaded.version == a.version
    assert np.allclose(loaded.predict_proba(Xte[:50]), a.predict_proba(Xte[:50]), atol=1e-6)
    # MC dropout of the built-in CNN re-runs the head only, and is seeded
    mc = a.mc_predict_proba(Xte[:50], T=4, seed=0)
    assert mc.shape == (4, 50, 10) and np.array_equal(mc, a.mc_predict_proba(Xte[:50], T=4, seed=0))
    # warm start keeps the architecture and moves the weights
    d = train_classifier(Xtr[:50], ytr[:50], num_classes=10, seed=0, steps=5, init=a, device="cpu")
    assert d.version != a.version and d.module.config == a.module.config


def test_train_classifier_input_errors(digits):
    from curator.models import train_classifier

    Xtr, ytr, *_ = digits
    with pytest.raises(ValidationError, match="labels has 3 entries but images has 4"):
        train_classifier(Xtr[:4], ytr[:3])
    with pytest.raises(ValidationError, match="integer"):
        train_classifier(Xtr[:4], ytr[:4].astype(float))
    with pytest.raises(ValidationError, match="num_classes is 5"):
        train_classifier(Xtr[:40], ytr[:40], num_classes=5)
    with pytest.raises(ValidationError, match="images must be"):
        from curator.models import images_to_tensor

        images_to_tensor(np.zeros((2, 3, 4, 5, 6), np.uint8))
