"""The label-efficiency benchmark's second data sets: procedural shapes and digits splits."""

from __future__ import annotations

import importlib.util

import numpy as np

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("le_run", ROOT / "benchmarks" / "label_efficiency" / "run.py")
le_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(le_run)


def test_procedural_set_is_deterministic_balanced_and_pool_differs_from_test():
    Xtr, ytr, Xte, yte = le_run.load_procedural(size=32, pool=24, test=16)
    assert Xtr.shape == (24, 32, 32, 3) and Xte.shape == (16, 32, 32, 3) and Xtr.dtype == np.uint8
    assert np.bincount(ytr).tolist() == [3] * 8 and np.bincount(yte).tolist() == [2] * 8
    again = le_run.load_procedural(size=32, pool=24, test=16)
    assert all(np.array_equal(a, b) for a, b in zip((Xtr, ytr, Xte, yte), again))
    assert not np.array_equal(Xtr[:16], Xte)  # separate draws, not the same pictures
    assert Xtr.std() > 10  # pictures, not blank frames


def test_balanced_start_takes_every_class_present():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 5)
    start = le_run.balanced_start(y, 2, rng)
    assert len(start) == 16 and np.bincount(y[start]).tolist() == [2] * 8
    ten = np.repeat(np.arange(10), 5)  # MNIST's 10 classes: the same draws as before (classes 0..9 in order)
    assert np.bincount(ten[le_run.balanced_start(ten, 2, np.random.default_rng(0))]).tolist() == [2] * 10


def test_digits_split_sizes_follow_the_test_option():
    Xtr, ytr, Xte, yte = le_run.load_digits_16(1000)
    assert len(Xte) == 1000 and len(Xtr) == 797 and Xtr.shape[1:] == (16, 16)
    X5, _, T5, _ = le_run.load_digits_16()
    assert len(T5) == 500 and len(X5) == 1297
