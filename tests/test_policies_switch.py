"""The default ``curator`` policy: the switch rule (typical while labels per class are few,
uncertainty after) and batch-aware uncertainty (picks spread over near-identical uncertain
samples instead of taking them all)."""

from __future__ import annotations

import numpy as np
import pytest

from curator import Pool, policies
from curator.exceptions import ValidationError
from curator.policies.compose import COLD_PER_CLASS
from curator.testing import check_policy, make_pool


def planted(labeled: int, classes: int = 5, seed: int = 0) -> tuple[Pool, np.ndarray, np.ndarray]:
    """Five dense, confidently predicted blobs (200 each) and a sparse band of 60 uncertain samples.

    Returns the pool, a mask of the uncertain band, and the blob of each row (-1 in the band).
    Typicality picks blob centres; uncertainty picks the band.
    """
    rng = np.random.default_rng(seed)
    d, T = 16, 8
    centres = np.eye(d)[:classes] * 4.0
    blob = np.repeat(np.arange(classes), 200)
    E_blobs = centres[blob] + 0.3 * rng.normal(size=(len(blob), d))
    E_band = rng.normal(size=(60, d)) * 2.0  # spread out: not typical of anything
    E = np.vstack([E_blobs, E_band])
    band = np.r_[np.zeros(len(blob), bool), np.ones(60, bool)]
    logits = np.full((T, len(E), classes), -4.0)
    logits[:, np.flatnonzero(~band), blob] = 4.0  # blobs: confident, and the passes agree
    logits[:, band] = rng.normal(scale=3.0, size=(T, 60, classes))  # band: the passes disagree (high BALD)
    MC = np.exp(logits - logits.max(-1, keepdims=True))
    MC /= MC.sum(-1, keepdims=True)
    L = centres[np.arange(labeled) % classes] + 0.3 * rng.normal(size=(labeled, d))
    return Pool(embeddings=E, probs=MC.mean(0), mc_probs=MC, labeled_embeddings=L), band, \
        np.r_[blob, np.full(60, -1)]


def test_default_is_conformant_in_both_phases():
    pool = make_pool()  # 12 labeled, 5 classes: 2.4 per class, the cold phase
    assert policies.get("curator").phase(pool) == "cold"
    check_policy("curator", pool)
    warm = make_pool(m=40)  # 8 per class
    assert policies.get("curator").phase(warm) == "uncertainty"
    check_policy("curator", warm)
    check_policy(policies.get("curator", batch="diverse"), warm)


@pytest.mark.parametrize("labeled, phase", [(0, "cold"), (5, "cold"), (14, "cold"), (15, "uncertainty"),
                                            (40, "uncertainty")])
def test_switch_rule_is_labels_per_class(labeled, phase):
    """5 classes, switch at COLD_PER_CLASS = 3 labels per class: 14 labels is cold, 15 is not."""
    assert COLD_PER_CLASS == 3.0
    pool, _, _ = planted(labeled)
    assert policies.get("curator").phase(pool) == phase


def test_cold_phase_picks_typical_samples_and_uncertainty_phase_the_uncertain_ones():
    cold_pool, band, blob = planted(labeled=0)  # nothing labeled yet
    picks = policies.get("curator").select(cold_pool, budget=10, seed=0)
    # typical: the largest clusters (the dense blobs) give their most typical members;
    # uncertainty would take the sparse band, which the model gets wrong
    assert len(set(blob[picks]) - {-1}) == 5
    assert band[picks].mean() <= 0.5  # (k-means gives the band clusters of its own; measured 0.3)
    warm_pool, band, _ = planted(labeled=40)  # 8 per class
    picks = policies.get("curator").select(warm_pool, budget=10, seed=0)
    assert band[picks].mean() >= 0.8  # uncertainty: the band, which the model gets wrong


def test_pool_without_probs_is_cold_and_without_labeled_info_is_uncertainty():
    pool, _, _ = planted(labeled=40)
    assert policies.get("curator").phase(Pool(embeddings=pool.embeddings)) == "cold"
    assert policies.get("curator").phase(Pool(embeddings=pool.embeddings, probs=pool.probs,
                                              mc_probs=pool.mc_probs)) == "uncertainty"
    picks = policies.get("curator").select(Pool(embeddings=pool.embeddings), budget=5, seed=0)
    assert len(np.unique(picks)) == 5


@pytest.mark.parametrize("bad", [{"cold_per_class": -1}, {"cold_per_class": float("nan")},
                                 {"cold_per_class": "3"}, {"batch": "greedy"}])
def test_bad_parameters_name_the_parameter(bad):
    with pytest.raises(ValidationError, match=next(iter(bad))):
        policies.get("curator", **bad)


def clumped(seed: int = 0):
    """40 near-identical, most uncertain samples (one clump) among 400 spread, less uncertain ones."""
    rng = np.random.default_rng(seed)
    d, T, C = 16, 8, 5
    spread = rng.normal(size=(400, d))
    clump = rng.normal(size=d) + 0.01 * rng.normal(size=(40, d))
    E = np.vstack([spread, clump])
    logits = rng.normal(scale=1.0, size=(T, 440, C))
    logits[:, :400] += 3.0 * (np.arange(C) == rng.integers(C, size=(400, 1)))[None]  # spread: fairly sure
    logits[:, 400:] = rng.normal(scale=3.0, size=(T, 1, C)) + 0.01 * rng.normal(size=(T, 40, C))
    MC = np.exp(logits - logits.max(-1, keepdims=True))
    MC /= MC.sum(-1, keepdims=True)
    L = rng.normal(size=(50, d))  # 10 per class: the uncertainty phase
    return Pool(embeddings=E, probs=MC.mean(0), mc_probs=MC, labeled_embeddings=L), np.arange(440) >= 400


def test_batch_aware_picks_are_more_diverse_than_top_k():
    """Top-k BALD takes ten of the clump; the default spreads the batch (duplicate filter off, so
    the spreading is the batch-aware draw and the clustering, not the copy filter)."""
    pool, clump = clumped()
    top = policies.get("bald").select(pool, budget=10, seed=0)
    assert clump[top].all()  # the clump is the most uncertain: top-k takes only clump members
    for batch in ("power", "diverse"):
        picks = policies.get("curator", drop_duplicates=False, batch=batch).select(pool, budget=10, seed=0)
        assert clump[picks].sum() <= 2, batch
        E = pool.unit_embeddings[picks]
        sims = E @ E.T
        assert sims[~np.eye(10, dtype=bool)].max() < 0.99, batch  # no two near-identical picks


def test_power_draw_varies_with_the_seed_and_diverse_top_k_does_less():
    """The stochastic draw is what de-correlates consecutive batches: over 5 seeds the default
    picks more distinct samples than the top-k candidate variant."""
    pool, _ = clumped(seed=1)
    def distinct(batch):
        return len(set().union(*(set(policies.get("curator", batch=batch).select(pool, 10, seed=s).tolist())
                                 for s in range(5))))
    assert distinct("power") > distinct("diverse")
