"""Seeds: every random stream of curator derived one way, from (seed, round, stage, shard).

A stream is ``numpy.random.SeedSequence(seed, spawn_key=(round, stage code, shard))``: it
depends on those four numbers only, not on how many other shards or stages exist nor on the
order they run in, so a step split over workers (or resumed after a kill) draws what the
one-process run draws. Stage codes are CRC-32 of the stage's name: stable across processes,
machines and Python versions (``hash()`` of a str is salted per process).

Core layer: numpy and the standard library only.
"""

from __future__ import annotations

import numbers
import zlib

import numpy as np

__all__ = ["STAGES", "stage_code", "sequence", "rng", "derive"]

#: The stages that draw random numbers. A new stage is added here, so that two steps never
#: share a stream by reusing a name by accident.
STAGES = (
    "seed-set",  # the loop's round 0: which samples of each class start the labeled set
    "subsample",  # which pool samples a round scores when the pool is larger than ``subsample``
    "score",  # MC-dropout passes of the model over the pool
    "select",  # the selection policy
    "baseline",  # the random baseline's order of the pool
    "validation",  # which of a round's human labels are held out for the curve (no ground-truth test split)
    "cv-folds",  # the cross-validation folds of the human labels (no ground-truth test split)
    "ssl-init",  # the self-supervised encoder's initial weights (curator.selfsupervised)
    "ssl",  # each training step's batch and augmentations (shard = step), so a resumed run agrees
    "ssl-calibrate",  # the samples and synthetic copies of the dedup threshold's calibration
)


def stage_code(stage: str) -> int:
    """The stable integer of a stage name (CRC-32 of its UTF-8 bytes)."""
    if stage not in STAGES:
        raise ValueError(f"unknown random stage {stage!r}; the stages are {', '.join(STAGES)} (curator.seeds.STAGES)")
    return zlib.crc32(stage.encode("utf-8"))


def _nonneg(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
    return int(value)


def sequence(seed: int, *, round: int = 0, stage: str, shard: int = 0) -> np.random.SeedSequence:
    """The SeedSequence of (seed, round, stage, shard)."""
    return np.random.SeedSequence(_nonneg("seed", seed),
                                  spawn_key=(_nonneg("round", round), stage_code(stage), _nonneg("shard", shard)))


def rng(seed: int, *, round: int = 0, stage: str, shard: int = 0) -> np.random.Generator:
    """The generator of (seed, round, stage, shard)."""
    return np.random.default_rng(sequence(seed, round=round, stage=stage, shard=shard))


def derive(seed: int, *, round: int = 0, stage: str, shard: int = 0) -> int:
    """An int seed in [0, 2**32) of (seed, round, stage, shard), for code that takes an int (policies,
    torch): the same four numbers give the same int."""
    return int(sequence(seed, round=round, stage=stage, shard=shard).generate_state(1, np.uint32)[0])
