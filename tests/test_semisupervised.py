"""Label propagation (curator.semisupervised): the solve against a dense direct solve of the
definition, what propagation adds over the labels alone on data with a manifold structure,
unreached samples, the Pool form, extension to new samples and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from curator import Pool
from curator.exceptions import ValidationError
from curator.semisupervised import extend, knn_graph, propagate, propagate_pool


def rings(n_per=300, seed=0, noise=0.03):
    """Two concentric rings in the plane, lifted to 3-D so that cosine sees them apart:
    nearest labeled point and class often disagree, the graph follows each ring."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, size=2 * n_per)
    y = np.repeat([0, 1], n_per)
    r = np.where(y == 0, 1.0, 2.0)
    X = np.c_[r * np.cos(t), r * np.sin(t)] + noise * rng.normal(size=(2 * n_per, 2))
    return np.c_[X, np.full(len(X), 6.0)].astype(np.float32), y


def test_knn_graph_drops_each_row_itself():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    sims, nbr = knn_graph(X, 5)
    assert nbr.shape == (50, 5) and not (nbr == np.arange(50)[:, None]).any()
    G = X @ X.T
    np.fill_diagonal(G, -np.inf)
    np.testing.assert_allclose(sims, -np.sort(-G, 1)[:, :5], atol=1e-5)
    assert knn_graph(X[:4], 10)[1].shape == (4, 3)  # k shrinks to the other rows


def test_solution_equals_a_dense_direct_solve_of_the_definition():
    X, y = rings(60, noise=0.1)
    labeled = np.array([0, 1, 2, 60, 61])
    k, alpha, gamma = 6, 0.9, 3.0
    res = propagate(X, labeled, y[labeled], k=k, alpha=alpha, gamma=gamma, iterations=200)
    # the definition, densely: W kNN affinities symmetrised, S = D^-1/2 W D^-1/2, (I - alpha S) F = Y
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    G = U.astype(np.float64) @ U.T.astype(np.float64)
    np.fill_diagonal(G, -np.inf)
    n = len(X)
    W = np.zeros((n, n))
    for i in range(n):
        nb = np.argsort(-G[i])[:k]
        W[i, nb] = np.maximum(G[i, nb], 0) ** gamma
    W = W + W.T
    d = 1 / np.sqrt(W.sum(1))
    S = d[:, None] * W * d[None, :]
    Y = np.zeros((n, 2))
    counts = np.bincount(y[labeled])
    Y[labeled, y[labeled]] = 1 / counts[y[labeled]]
    F = np.linalg.solve(np.eye(n) - alpha * S, Y)
    want = F / F.sum(1, keepdims=True)
    np.testing.assert_allclose(res.probs, want, atol=2e-4)
    assert res.iterations < 200  # CG stopped on its tolerance


def test_propagation_follows_the_manifold_where_nearest_label_fails():
    X, y = rings(300)
    labeled = np.array([0, 300])  # one label per ring
    res = propagate(X, labeled, y[labeled])
    acc = (res.predictions == y).mean()
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    nearest = y[labeled][np.argmax(U @ U[labeled].T, axis=1)]
    assert acc > 0.97, acc
    assert (nearest == y).mean() < 0.8  # the labels alone do not say it
    assert res.predictions[labeled].tolist() == [0, 1]
    np.testing.assert_allclose(res.probs.sum(1), 1, atol=1e-5)
    assert ((res.confidence >= 0) & (res.confidence <= 1)).all()


def test_confidence_is_lower_near_the_class_boundary():
    rng = np.random.default_rng(2)
    X = np.c_[rng.uniform(-1, 1, size=(800, 1)), rng.normal(scale=0.05, size=(800, 1)), np.full((800, 1), 3.0)]
    y = (X[:, 0] > 0).astype(int)
    labeled = np.r_[np.argsort(X[:, 0])[:5], np.argsort(X[:, 0])[-5:]]
    res = propagate(X, labeled, y[labeled])
    near = np.abs(X[:, 0]) < 0.05
    far = np.abs(X[:, 0]) > 0.7
    assert res.confidence[near].mean() < res.confidence[far].mean()


def test_a_component_no_label_reaches_gets_uniform_probabilities_and_zero_confidence():
    X, y = rings(100)
    far = np.c_[np.eye(3)[[0]].repeat(20, 0) * 5 + 0.01 * np.random.default_rng(0).normal(size=(20, 3))]
    far[:, 2] = -5.0  # opposite direction: no kNN edge to the rings
    Xa = np.vstack([X, far]).astype(np.float32)
    res = propagate(Xa, np.array([0, 100]), np.array([0, 1]), k=5)
    assert not res.reached[200:].any() and res.reached[:200].all()
    np.testing.assert_allclose(res.probs[200:], 0.5)
    np.testing.assert_allclose(res.confidence[200:], 0.0, atol=1e-9)


def test_class_normalised_labels_keep_a_rare_class_from_being_flooded():
    # a strip, class = sign of x: 30 labels at the negative end against 1 at the positive end
    rng = np.random.default_rng(2)
    X = np.c_[rng.uniform(-1, 1, size=(800, 1)), rng.normal(scale=0.05, size=(800, 1)), np.full((800, 1), 3.0)]
    y = (X[:, 0] > 0).astype(int)
    order = np.argsort(X[:, 0])
    labeled = np.r_[order[:30], order[-1:]]
    res = propagate(X, labeled, y[labeled])
    assert (res.predictions[y == 1] == 1).mean() > 0.95  # unnormalised labels (Y = 1) give 0.90 here


def test_pool_form_returns_the_pool_rows_of_the_joint_graph():
    X, y = rings(150)
    lab = np.array([3, 160])
    rest = np.setdiff1d(np.arange(len(X)), lab)
    res = propagate_pool(Pool(embeddings=X[rest], labeled_embeddings=X[lab]), y[lab])
    assert res.probs.shape == (len(rest), 2)
    assert (res.predictions == y[rest]).mean() > 0.97
    with pytest.raises(ValidationError, match="one per labeled embedding"):
        propagate_pool(Pool(embeddings=X[rest], labeled_embeddings=X[lab]), y[:3])
    with pytest.raises(ValidationError, match="labeled_embeddings"):
        propagate_pool(Pool(embeddings=X[rest]), y[lab])


def test_extend_labels_new_samples_from_their_neighbours():
    X, y = rings(300, seed=0)
    Xt, yt = rings(100, seed=1)
    res = propagate(X, np.array([0, 300]), np.array([0, 1]))
    P = extend(res, X, Xt)
    assert P.shape == (200, 2)
    np.testing.assert_allclose(P.sum(1), 1, atol=1e-5)
    assert (P.argmax(1) == yt).mean() > 0.95
    with pytest.raises(ValidationError, match="rows"):
        extend(res, X[:10], Xt)


def test_deterministic():
    X, y = rings(100)
    a = propagate(X, np.array([0, 100]), np.array([0, 1]))
    b = propagate(X, np.array([0, 100]), np.array([0, 1]))
    assert np.array_equal(a.probs, b.probs)


@pytest.mark.parametrize("kwargs, needle", [
    ({"labeled": [0, 1], "labels": [0]}, "same length"),
    ({"labeled": [], "labels": []}, "no labels"),
    ({"labeled": [0, 0], "labels": [0, 1]}, "repeat"),
    ({"labeled": [0, 500], "labels": [0, 1]}, r"\[0, 200\)"),
    ({"labeled": [0, 1], "labels": [0, -1]}, ">= 0"),
    ({"labeled": [0, 1], "labels": [0.5, 1.0]}, "integers"),
    ({"labeled": [0, 1], "labels": [0, 0]}, "single class"),
    ({"labeled": [0, 1], "labels": [0, 3], "classes": 2}, "out of range"),
    ({"labeled": [0, 1], "labels": [0, 1], "classes": 1}, "classes"),
    ({"labeled": [0, 1], "labels": [0, 1], "k": 0}, "k "),
    ({"labeled": [0, 1], "labels": [0, 1], "alpha": 1.0}, "alpha"),
    ({"labeled": [0, 1], "labels": [0, 1], "gamma": 0}, "gamma"),
    ({"labeled": [0, 1], "labels": [0, 1], "iterations": 0}, "iterations"),
])
def test_bad_arguments_raise_one_clear_error(kwargs, needle):
    X, _ = rings(100)
    with pytest.raises(ValidationError, match=needle):
        propagate(X, **kwargs)


def test_too_few_samples_and_bad_embeddings():
    with pytest.raises(ValidationError, match="too few samples"):
        propagate(np.ones((1, 3)), [0], [1], classes=2)
    with pytest.raises(ValidationError, match="NaN"):
        propagate(np.array([[0, 1.0], [np.nan, 1]]), [0], [1], classes=2)
    assert math.isclose(float(propagate(np.eye(3), [0, 1], [0, 1]).probs.sum()), 3.0, rel_tol=1e-5)


# -- the semi-supervised head (curator.semihead) and the built-in recipe ---------------------------


def moons(n_per=300, seed=0, noise=0.08):
    """Two interleaved half-moons (scikit-learn's), centred: cosine sees the angle around the origin poorly,
    so the head runs on raw 2-D coordinates lifted by a constant third axis."""
    from sklearn.datasets import make_moons

    X, y = make_moons(2 * n_per, noise=noise, random_state=seed)
    return np.hstack([X - X.mean(0), np.full((len(X), 1), 3.0)]).astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_head_beats_supervised_only_with_two_labels_per_class(seed):
    """Few labels on two moons: the pool carries the shape, so the head must beat a 1-NN classifier and
    a logistic regression trained on the same 4 labels, on fresh test points, by a wide margin."""
    from sklearn.linear_model import LogisticRegression

    from curator.semihead import fit_head

    X, y = moons(seed=seed)
    Xt, yt = moons(seed=100 + seed)
    rng = np.random.default_rng(seed)
    labeled = np.concatenate([rng.choice(np.flatnonzero(y == c), 2, replace=False) for c in (0, 1)])
    labels = np.full(len(y), -1)
    labels[labeled] = y[labeled]
    head = fit_head(X, labels, k=10)
    semi_err = float((head.predict_proba(Xt).argmax(1) != yt).mean())
    d = ((Xt[:, None, :] - X[labeled][None]) ** 2).sum(-1)
    nn_err = float((y[labeled][d.argmin(1)] != yt).mean())
    lr_err = float((LogisticRegression().fit(X[labeled], y[labeled]).predict(Xt) != yt).mean())
    assert semi_err < 0.05, semi_err
    assert semi_err < min(nn_err, lr_err) - 0.05, (semi_err, nn_err, lr_err)


def test_fit_semisupervised_keeps_labels_and_fills_the_rest():
    from curator.semihead import fit_semisupervised

    X, y = moons(n_per=100)
    labels = np.full(len(y), -1)
    labels[[0, 1, 2, 3]] = y[[0, 1, 2, 3]]
    P = fit_semisupervised(X, labels, classes=2)
    assert P.shape == (200, 2) and np.allclose(P.sum(1), 1, atol=1e-5)
    assert (P[[0, 1, 2, 3]].argmax(1) == y[[0, 1, 2, 3]]).all() and np.allclose(P[[0, 1, 2, 3]].max(1), 1)
    with pytest.raises(ValidationError, match="one per embedding row"):
        fit_semisupervised(X, labels[:-1])
    with pytest.raises(ValidationError, match="no labels"):
        fit_semisupervised(X, np.full(len(y), -1))


def test_pseudo_labels_are_balanced_confident_unlabeled_rows_weighted_by_confidence():
    from curator.semihead import fit_head, pseudo_labels

    X, y = moons(n_per=200)
    labels = np.full(len(y), -1)
    lab = np.concatenate([np.flatnonzero(y == c)[:3] for c in (0, 1)])
    labels[lab] = y[lab]
    head = fit_head(X, labels)
    pos, py, w = pseudo_labels(head, per_class=25)
    assert len(pos) == 50 and not np.isin(pos, lab).any()
    assert (np.bincount(py, minlength=2) == 25).all()
    assert np.allclose(w, head.confidence[pos])
    # the most confident of each predicted class: none left out is surer than the least sure kept
    for c in (0, 1):
        rest = np.setdiff1d(np.flatnonzero((head.probs.argmax(1) == c) & (labels < 0)), pos)
        assert head.confidence[rest].max() <= w[py == c].min() + 1e-9
    assert (py == y[pos]).mean() > 0.95
    with pytest.raises(ValidationError, match="per_class"):
        pseudo_labels(head, per_class=-1)


def test_propagate_with_a_prebuilt_graph_equals_building_it():
    X, y = rings(n_per=100)
    lab = np.array([0, 100])
    a = propagate(X, lab, y[lab])
    b = propagate(X, lab, y[lab], neighbours=knn_graph(X / np.linalg.norm(X, axis=1, keepdims=True), 10))
    assert np.allclose(a.probs, b.probs, atol=1e-6)
    with pytest.raises(ValidationError, match="neighbours must be"):
        propagate(X, lab, y[lab], neighbours=(np.zeros((3, 10)), np.zeros((3, 10), np.int64)))


def test_deskew_pca_embedding_fits_on_the_pool_and_straightens_a_slanted_stroke():
    from curator.semihead import EMBEDDINGS, deskew, embed_pool

    img = np.zeros((1, 28, 28), np.float32)
    for r in range(4, 24):  # a bar slanted by 0.5 px per row
        c = 8 + r // 2
        img[0, r, c:c + 3] = 1.0
    out = deskew(img)[0]
    cols = [np.average(np.arange(28), weights=out[r]) for r in range(6, 22) if out[r].sum() > 0.5]
    assert np.ptp(cols) < 2.0  # upright: the stroke's column barely moves from row to row
    rng = np.random.default_rng(0)
    pool, test = rng.random((60, 28, 28)), rng.random((5, 28, 28))
    E, Et = embed_pool("deskew-pca", pool, test)
    assert E.shape == (60, 50) and Et.shape == (5, 50)
    with pytest.raises(ValidationError, match="unknown embedding"):
        embed_pool("nope", pool)
    assert {"pca", "deskew-pca"} <= set(EMBEDDINGS)


def test_supervised_only_weights_are_todays_recipe():
    """sample_weight=None is exactly the old training: the same weights as a call without the argument."""
    import torch

    from curator.models import train_classifier

    rng = np.random.default_rng(0)
    X = rng.random((24, 16, 16)).astype(np.float32)
    y = np.arange(24) % 3
    a = train_classifier(X, y, steps=5, seed=3)
    b = train_classifier(X, y, steps=5, seed=3, sample_weight=None)
    c = train_classifier(X, y, steps=5, seed=3, sample_weight=np.r_[np.ones(12), np.zeros(12)])
    sa, sb, sc = (m.module.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # the weights do reach the loss
    with pytest.raises(ValidationError, match="sample_weight"):
        train_classifier(X, y, steps=1, sample_weight=np.full(24, np.nan))


@pytest.mark.slow
def test_loop_trains_semi_supervised_by_default_and_supervised_only_on_request(db_settings):
    """On the demo digits: the default recipe records its pseudo-labels in the model's params; with
    supervised_only the model's params are today's (no semi key) and its weights those of the plain recipe."""
    import dataclasses

    from test_loop import config, small_dataset

    from curator.loop import run_loop
    from curator.steps import run_step
    from curator.store import models as store_models
    semi = run_loop(db_settings, dataclasses.replace(
        config(small_dataset(db_settings, "semi", n_train=200, n_test=100)), rounds=1, epochs=2))
    plain = run_loop(db_settings, dataclasses.replace(
        config(small_dataset(db_settings, "plain", n_train=200, n_test=100)), rounds=1, epochs=2,
        supervised_only=True))
    assert semi.rounds_done == 1 and plain.rounds_done == 1

    def params(dataset):
        def read(s):
            return [m.params for m in (store_models.get(s, i) for i in store_models.ids_named(s, "smallcnn"))
                    if m.params.get("dataset") == dataset]
        return run_step(db_settings, read)

    semi_params, plain_params = params("semi"), params("plain")
    assert semi_params and all(p["semi_supervised"] and p["semi_pseudo_labels"] > 0
                               and p["semi_embedding"] == "coldstart" for p in semi_params)
    assert plain_params and not any(k.startswith("semi") for p in plain_params for k in p)
    assert {p["n_labels"] for p in plain_params} == {20, 28}
    from curator.report import write_report

    semi_md = write_report(db_settings, "semi", plots=False).read_text()
    plain_md = write_report(db_settings, "plain", plots=False).read_text()
    assert "## Training" in semi_md and "Semi-supervised" in semi_md and "pseudo-labels" in semi_md
    assert "Supervised only" in plain_md
