"""A stopped verification resumes (curator.checkpoint): scored blocks are kept as they come, a run
started again scores only the rest and gives the same result; a folder of other work is not trusted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curator import copyverify
from curator.checkpoint import Checkpoint
from test_dedup_verify import _procedural


def test_rows_kept_block_by_block_and_read_back(tmp_path):
    ck = Checkpoint(tmp_path / "ck", {"pool": "a"})
    assert not ck.resumed
    with ck.rows("scores", (10, 2), np.float64, 4, meta={"floor": 0.5}) as rows:
        assert rows.todo() == [(0, 4), (4, 8), (8, 10)]
        rows.put(4, np.full((4, 2), 7.0))
    again = Checkpoint(tmp_path / "ck", {"pool": "a"})
    assert again.resumed
    rows = again.rows("scores", (10, 2), np.float64, 4, meta={"floor": 0.5})
    assert rows.todo() == [(0, 4), (8, 10)] and rows.resumed_rows == 4
    assert np.array_equal(rows.out[4:8], np.full((4, 2), 7.0))
    rows.close()
    # other settings of the same array: started over, not read back
    other = Checkpoint(tmp_path / "ck", {"pool": "a"}).rows("scores", (10, 2), np.float64, 4, meta={"floor": 0.6})
    assert len(other.todo()) == 3 and other.resumed_rows == 0
    other.close()
    # another key: the folder is cleared
    Checkpoint(tmp_path / "ck", {"pool": "a"}).arrays("pairs", lambda: (np.arange(3),))
    fresh = Checkpoint(tmp_path / "ck", {"pool": "b"})
    assert not fresh.resumed and sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["key.json"]
    calls = []
    got = fresh.arrays("pairs", lambda: calls.append(1) or (np.arange(5), np.arange(5) * 2))
    got2 = Checkpoint(tmp_path / "ck", {"pool": "b"}).arrays("pairs", lambda: calls.append(1) or ())
    assert calls == [1] and all(np.array_equal(a, b) for a, b in zip(got, got2)) and len(got2) == 2


REAL_SPAN = copyverify._score_span


def _counting(monkeypatch, stop_after: int | None = None) -> list:
    """Spans scored from now on (a list filled as they are); with ``stop_after``, a KeyboardInterrupt
    (Ctrl-C) once that many were scored."""
    seen = []

    def span(p, i, j, floor, sigmas, sp):
        if len(seen) == stop_after:
            raise KeyboardInterrupt
        seen.append(sp)
        return REAL_SPAN(p, i, j, floor, sigmas, sp)

    monkeypatch.setattr(copyverify, "_score_span", span)
    return seen


def test_stopped_scoring_resumes_with_only_the_blocks_left(tmp_path, monkeypatch):
    rows, images = _procedural(tmp_path, n=30, copies=0.2)
    monkeypatch.setattr(copyverify, "SCORE_BLOCK", 8)
    rng = np.random.default_rng(1)
    i, j = rng.integers(0, len(images), 45), rng.integers(0, len(images), 45)
    p = copyverify.Prepared(images)
    kw = dict(progress=False, floor=0.5, sigmas=copyverify.SCORE_SIGMAS)
    whole = copyverify.score_pairs(p, i, j, **kw)
    seen = _counting(monkeypatch, stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        copyverify.score_pairs(p, i, j, checkpoint=Checkpoint(tmp_path / "ck", {"run": 1}), **kw)
    assert len(seen) == 3
    seen = _counting(monkeypatch)
    resumed = copyverify.score_pairs(p, i, j, checkpoint=Checkpoint(tmp_path / "ck", {"run": 1}), **kw)
    assert [s for s, _ in seen] == [24, 32, 40]  # the 3 blocks done before the stop are not scored again
    assert np.array_equal(resumed, whole)
    # other pairs under the same key: nothing is read back from the first ones
    seen = _counting(monkeypatch)
    other = copyverify.score_pairs(p, j, i, checkpoint=Checkpoint(tmp_path / "ck", {"run": 1}), **kw)
    assert len(seen) == 6 and not np.array_equal(other, whole)
    # a stop in a one-process run resumed by forked processes: the same scores
    seen = _counting(monkeypatch, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        copyverify.score_pairs(p, i, j, checkpoint=Checkpoint(tmp_path / "ck2", {"run": 1}), **kw)
    monkeypatch.setattr(copyverify, "_score_span", REAL_SPAN)
    forked = copyverify.score_pairs(p, i, j, checkpoint=Checkpoint(tmp_path / "ck2", {"run": 1}), workers=2, **kw)
    assert np.array_equal(forked, whole)


def test_find_copies_stopped_in_its_scoring_resumes_to_the_same_groups(tmp_path, monkeypatch):
    """Ctrl-C part way through the pool's pairs, then the same call again: the candidates are read back,
    only the blocks left are scored, the groups and threshold are those of an uninterrupted run, and the
    checkpoint folder is removed once the groups are made."""
    rows, images = _procedural(tmp_path / "pool", n=48, copies=0.15, lookalikes=0.15)
    monkeypatch.setattr(copyverify, "SCORE_BLOCK", 32)
    whole, info = copyverify.find_copies(images, progress=False)
    n_pairs = info["candidate_pairs"]
    blocks = -(-n_pairs // 32)
    assert blocks >= 4
    synthetic_blocks = -(-copyverify.CALIBRATION_SAMPLES // 32) if len(images) > copyverify.CALIBRATION_SAMPLES \
        else -(-len(images) // 32)
    folder = tmp_path / "ck"
    seen = _counting(monkeypatch, stop_after=synthetic_blocks + 2)  # the synthetic copies, then 2 of the pool's
    with pytest.raises(KeyboardInterrupt):
        copyverify.find_copies(images, progress=False, checkpoint=folder)
    assert (folder / "candidates.npz").is_file() and (folder / "scores.done.npy").is_file()
    # kept for this pool and this version of the score's code (an edit or upgrade starts over)
    key = json.loads((folder / "key.json").read_text())
    assert key["code"] == copyverify._code_digest() and key["n"] == len(images)
    searched = []
    real_candidates = copyverify.candidates
    monkeypatch.setattr(copyverify, "candidates", lambda *a, **k: searched.append(1) or real_candidates(*a, **k))
    seen = _counting(monkeypatch)
    groups, again = copyverify.find_copies(images, progress=False, checkpoint=folder)
    assert searched == []  # the candidate pairs were read back
    assert len(seen) == synthetic_blocks + blocks - 2
    assert [g.tolist() for g in groups] == [g.tolist() for g in whole]
    assert again["threshold"] == info["threshold"] and again["verified_pairs"] == info["verified_pairs"]
    assert not folder.exists()
