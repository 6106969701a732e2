"""Aggregating several labelers' answers into one label per sample: majority or Dawid-Skene.

numpy only, so the versions (which record the method they used) can call it.
``majority`` is the simple vote; ``dawid_skene`` (Dawid & Skene 1979) weighs each
labeler by an estimated confusion matrix, so a careless labeler counts for less
than a careful one, which matters once overlap is 3 or more. crowd-kit has the same
estimator, but would pull pandas-heavy dependencies into the core for 30 lines.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

Answer = tuple[int, str, str]  # (item, labeler, label)
METHODS = ("majority", "dawid-skene")


def majority(answers: Sequence[Answer]) -> dict[int, str]:
    """item -> most frequent label (ties: the alphabetically first, so it is reproducible)."""
    by_item: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item, _, label in answers:
        by_item[item][label] += 1
    return {i: min(c, key=lambda lab: (-c[lab], lab)) for i, c in by_item.items()}


def dawid_skene(answers: Sequence[Answer], *, iterations: int = 50, tol: float = 1e-6) -> tuple[dict[int, str], dict]:
    """Dawid & Skene (1979) EM: each labeler has a confusion matrix; returns item -> most probable
    label and {labeler: accuracy estimate}. Started from the majority vote, as in the paper."""
    if not answers:
        return {}, {}
    items = sorted({i for i, _, _ in answers})
    labelers = sorted({w for _, w, _ in answers})
    cats = sorted({lab for _, _, lab in answers})
    ii, ww, kk = ({v: k for k, v in enumerate(xs)} for xs in (items, labelers, cats))
    obs = np.array([(ii[i], ww[w], kk[lab]) for i, w, lab in answers], dtype=int).reshape(-1, 3)
    K = len(cats)
    T = np.zeros((len(items), K))  # posterior of the true label per item
    np.add.at(T, (obs[:, 0], obs[:, 2]), 1.0)
    T /= T.sum(1, keepdims=True)
    for _ in range(iterations):
        prior = T.mean(0) + 1e-9
        conf = np.full((len(labelers), K, K), 1e-6)  # labeler x true x given, smoothed
        for true in range(K):
            np.add.at(conf[:, true, :], (obs[:, 1], obs[:, 2]), T[obs[:, 0], true])
        conf /= conf.sum(2, keepdims=True)
        log_t = np.tile(np.log(prior), (len(items), 1))
        np.add.at(log_t, obs[:, 0], np.log(conf[obs[:, 1], :, obs[:, 2]]))
        new = np.exp(log_t - log_t.max(1, keepdims=True))
        new /= new.sum(1, keepdims=True)
        done = np.abs(new - T).max() < tol
        T = new
        if done:
            break
    accuracy = {w: float((np.diag(conf[k]) * prior).sum() / prior.sum()) for w, k in ww.items()}
    return {i: cats[int(T[r].argmax())] for i, r in ii.items()}, accuracy
