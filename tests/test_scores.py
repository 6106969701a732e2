"""Scores, novelty and the Pool: values on hand-made cases, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from curator import Pool
from curator import scores as S
from curator.exceptions import EmptyPoolError, ValidationError
from curator.novelty import GreedyNovelty, novelty

P = np.array([
    [1.0, 0.0, 0.0],  # certain
    [0.5, 0.5, 0.0],  # two-way tie
    [1 / 3, 1 / 3, 1 / 3],  # uniform
    [0.7, 0.2, 0.1],
])


def test_uncertainty_scores_order_and_values():
    assert np.allclose(S.entropy(P)[:3], [0.0, np.log(2), np.log(3)])
    assert np.allclose(S.margin(P), [0.0, 1.0, 1.0, 0.5])
    assert np.allclose(S.least_confidence(P), [0.0, 0.5, 2 / 3, 0.3])
    assert np.allclose(S.variation_ratio(P), S.least_confidence(P))
    for f in (S.entropy, S.margin, S.least_confidence):
        s = f(P)
        assert s[0] == s.min() and s.dtype == np.float64


def test_bald_is_disagreement_not_noise():
    T = 6
    agree_uncertain = np.tile([0.5, 0.5], (T, 1))  # every pass unsure: aleatoric
    disagree = np.array([[1, 0], [0, 1]] * (T // 2), dtype=float)  # passes confident but disagree
    agree_certain = np.tile([1.0, 0.0], (T, 1))
    MC = np.stack([agree_uncertain, disagree, agree_certain], axis=1)  # (T, 3, 2)
    b = S.bald(MC)
    assert np.isclose(b[1], np.log(2)) and abs(b[0]) < 1e-9 and abs(b[2]) < 1e-9
    assert np.allclose(S.variation_ratio(mc_probs=MC), [0.5, 0.5, 0.0])


def test_normalize_ranks_ties_and_constants():
    assert np.allclose(S.normalize([3.0, 1.0, 2.0]), [1.0, 0.0, 0.5])
    assert np.allclose(S.normalize([5.0, 5.0, 5.0]), [0.5, 0.5, 0.5])
    assert np.allclose(S.normalize([1.0, 1.0, 3.0]), [0.25, 0.25, 1.0])
    assert np.allclose(S.normalize([0.0, 2.0, 1.0], "minmax"), [0.0, 1.0, 0.5])
    with pytest.raises(ValidationError, match="rank' or 'minmax"):
        S.normalize([1.0], "zscore")


@pytest.mark.parametrize("bad, match", [
    (np.array([[np.nan, 1.0], [0.5, 0.5]]), "NaN or infinite values \\(rows \\[0\\]\\)"),
    (np.array([[np.inf, 0.0]]), "NaN or infinite"),
    (np.array([[0.2, 0.2], [0.5, 0.5]]), "sum to 1"),
    (np.array([[2.0, -1.0]]), "negative values"),
    (np.array([0.5, 0.5]), "must be 2-D"),
    (np.array([[1.0], [1.0]]), "at least 2 classes"),
])
def test_bad_probabilities_are_named(bad, match):
    with pytest.raises(ValidationError, match=match) as exc:
        S.entropy(bad)
    assert "probs" in str(exc.value)


def test_bald_input_checks():
    with pytest.raises(ValidationError, match="mc_probs must be 3-D"):
        S.bald(P)
    with pytest.raises(ValidationError, match="at least 2 stochastic passes"):
        S.bald(P[None])


def test_novelty_distance_to_nearest_reference():
    E = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    R = np.array([[2.0, 0.0]])  # normalised inside
    assert np.allclose(novelty(E, R), [0.0, 1.0, 2.0], atol=1e-6)
    assert np.allclose(novelty(E, np.zeros((0, 2))), 2.0)  # nothing labeled: all novel
    R2 = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert np.allclose(novelty(E, R2, k=2), [0.5, 0.5, 1.5], atol=1e-6)
    with pytest.raises(ValidationError, match="reference has 3 columns"):
        novelty(E, np.ones((2, 3)))


def test_greedy_novelty_counts_selected_samples():
    E = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]], dtype=np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    g = GreedyNovelty(E, np.zeros((0, 2), np.float32), k=1)
    g.add(0)
    s = g.scores
    assert s[0] == 0.0 and s[1] < 0.02 and s[2] > 0.9  # the near copy of a pick is no longer novel


def test_pool_validates_and_is_read_only():
    rng = np.random.default_rng(0)
    E = rng.normal(size=(5, 3)).astype(np.float32)
    pool = Pool(embeddings=E, probs=np.full((5, 2), 0.5))
    with pytest.raises(ValueError):
        pool.embeddings[0, 0] = 1.0
    E[0, 0] = 42.0  # the caller's array stays the caller's
    assert len(pool) == 5 and "n=5" in repr(pool)
    with pytest.raises(ValidationError, match="probs has 4 rows but the pool has 5"):
        Pool(embeddings=E, probs=np.full((4, 2), 0.5))
    with pytest.raises(ValidationError, match="mc_probs has 4 samples"):
        Pool(embeddings=E, mc_probs=np.full((3, 4, 2), 0.5))
    with pytest.raises(ValidationError, match="mc_probs has 3 classes but probs has 2"):
        Pool(probs=np.full((5, 2), 0.5), mc_probs=np.full((2, 5, 3), 1 / 3))
    with pytest.raises(ValidationError, match="labeled_embeddings has 4 columns"):
        Pool(embeddings=E, labeled_embeddings=np.ones((2, 4)))
    with pytest.raises(ValidationError, match="embeddings contains NaN"):
        Pool(embeddings=np.array([[np.nan, 1.0]]))
    with pytest.raises(ValidationError, match="neither"):
        Pool()
    with pytest.raises(EmptyPoolError, match="empty"):
        Pool(probs=np.zeros((0, 2)))


def test_pool_subset_and_mean_probs():
    MC = np.stack([np.tile([0.9, 0.1], (4, 1)), np.tile([0.1, 0.9], (4, 1))])
    pool = Pool(embeddings=np.eye(4), mc_probs=MC, ids=[10, 11, 12, 13])
    assert np.allclose(pool.mean_probs, 0.5)
    sub = pool.subset([3, 1])
    assert sub.ids.tolist() == [13, 11] and sub.mc_probs.shape == (2, 2, 2)
    assert np.allclose(np.linalg.norm(pool.unit_embeddings, axis=1), 1.0)
