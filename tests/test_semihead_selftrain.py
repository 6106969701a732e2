"""Self-training (curator.semihead.self_train): the CNN learns the pool's propagated labels and the
labels propagate again over its embedding. On a small confusable subset of scikit-learn's digits it
must not make the pool's labels worse than propagation alone, must return valid probabilities, keep
the human labels, extend to new images, and refuse bad input with one clear error."""

from __future__ import annotations

import numpy as np
import pytest

from curator.exceptions import ValidationError
from curator.semihead import PcaEmbedding, fit_head, self_train


@pytest.fixture(scope="module")
def digits_case():
    """300 images of 3, 5, 8 and 9 (8 x 8, confusable), 3 labels per class, the head on their PCA."""
    import torch
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)  # small batches: one thread is faster than two contending
    d = load_digits()
    classes = [3, 5, 8, 9]
    keep = np.isin(d.target, classes)
    X = (d.images[keep].astype(np.float32) / 16.0)[:300]
    y = np.searchsorted(classes, d.target[keep])[:300]
    labels = np.full(len(y), -1, np.int64)
    for c in range(len(classes)):
        labels[np.flatnonzero(y == c)[:3]] = c
    head = fit_head(PcaEmbedding(dims=20).fit(X).transform(X), labels, classes=len(classes))
    st = self_train(X, head, labels, steps=300, batch_size=64, seed=0)
    return X, y, labels, head, st


def test_self_training_does_not_worsen_the_pools_labels_and_returns_valid_probabilities(digits_case):
    X, y, labels, head, st = digits_case
    lp_err = float((head.probs.argmax(1) != y).mean())
    st_err = float((st.head.probs.argmax(1) != y).mean())
    assert lp_err > 0.05  # a case with something to correct
    assert st_err <= lp_err, (st_err, lp_err)
    P = st.head.probs
    assert P.shape == head.probs.shape and np.isfinite(P).all() and (P >= 0).all()
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-5)
    pos = np.flatnonzero(labels >= 0)
    assert (P[pos].argmax(1) == labels[pos]).all() and (st.head.confidence[pos] == 1.0).all()
    assert st.scale == 2  # 8 x 8 is below the CNN's 14-pixel minimum: upsampled
    Q = st.predict_proba(X[:20])  # new images: embedded by the CNN, the vote of their pool neighbours
    assert Q.shape == (20, 4)
    np.testing.assert_allclose(Q.sum(1), 1.0, atol=1e-5)
    assert (Q.argmax(1) == P[:20].argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("change, needle", [
    (dict(head="not a head"), "head must be a fitted Head"),
    (dict(pool_images="short"), "pool_images must be"),
    (dict(pool_images="nan"), "finite"),
    (dict(labels="other"), "labels must be the ones the head was fitted with"),
    (dict(labels="float"), "integer array"),
    (dict(steps=0), "steps"),
    (dict(label_weight=-1.0), "label_weight"),
])
def test_bad_input_gets_one_clear_error(digits_case, change, needle):
    X, y, labels, head, _ = digits_case
    args = dict(pool_images=X, head=head, labels=labels, steps=1)
    if change.get("pool_images") == "short":
        change = dict(pool_images=X[:-1])
    elif change.get("pool_images") == "nan":
        bad = X.copy()
        bad[0, 0, 0] = np.nan
        change = dict(pool_images=bad)
    elif change.get("labels") == "other":
        other = labels.copy()
        other[np.flatnonzero(labels < 0)[0]] = 0
        change = dict(labels=other)
    elif change.get("labels") == "float":
        change = dict(labels=labels.astype(float))
    args.update(change)
    with pytest.raises(ValidationError, match=needle):
        self_train(args.pop("pool_images"), args.pop("head"), args.pop("labels"), **args)
