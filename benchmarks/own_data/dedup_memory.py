"""Peak memory of the verified dedup step's phases whose memory grows with the pool, from a finished
``verify_folder.py`` run, without scoring its pairs again (an hour at 100k):

1. ``candidates``: the cold-start vectors memory-mapped (``--work/cold.npy``), the index, the rotated and
   cut query sets, the candidate pairs; the pairs are checked equal to the run's record;
2. ``prepare``: the pool prepared for verification (``prepare_pool``: ``StoredPrepared`` for image files)
   and the calibration's synthetic copies scored (``synthetic_scores``), as ``find_copies`` does;
3. ``group``: the record's kept pairs and every judged pair's margin grouped on the memory-mapped vectors
   (``find_duplicates(..., pairs=, compared=)``), scored against the generator's truth (the run's figures).

The pair scoring between 2 and 3 runs in worker processes; the parent then holds what 2 left (the prepared
pool's row cache) and the pair arrays: its RSS is in the full run's trace. Each phase's peak is VmHWM reset
at its start (``run.StepMemory``), with the heap (RssAnon) beside it. One JSON line a phase, then a summary.

    PYTHONPATH=$PWD python benchmarks/own_data/dedup_memory.py --work /work/own100k --n 100000 >> F.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, help="verify_folder.py's --work: images/, cold.npy, verify_record_<n>")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="")
    a = ap.parse_args(argv)

    from curator import copyverify
    from curator.dedup import find_duplicates
    from regroup_record import load, regroup
    from run import StepMemory, score_dedup

    work = Path(a.work)
    images = work / "images"
    d = load(str(work / f"verify_record_{a.n}.npz"))
    uris = [str(u) for u in d["uris"]]
    side = json.loads((work / f"verify_record_{a.n}.json").read_text())
    C = np.load(work / "cold.npy", mmap_mode="r")
    files = copyverify.ImageFiles(uris)
    out = {"n": a.n, "label": a.label}

    def phase(name, fn):
        mem, t0 = StepMemory(), time.perf_counter()
        got = fn()
        line = {"phase": name, "s": round(time.perf_counter() - t0, 1), **mem.end(), "load": os.getloadavg()[0]}
        out[name] = line
        print(json.dumps({"n": a.n, **line}), flush=True)
        return got

    i, j = phase("candidates", lambda: copyverify.candidates(files, embeddings=C))
    same = bool(np.array_equal(i, d["i"]) and np.array_equal(j, d["j"]))
    print(json.dumps({"n": a.n, "candidate_pairs": int(len(i)), "same_as_run": same}), flush=True)
    del i, j

    def prepare():
        p = copyverify.prepare_pool(files)
        copyverify.synthetic_scores(files, p, seed=a.seed)
        return p

    p = phase("prepare", prepare)
    cal = side["calibration"]
    keep, compared = regroup(d, cal, d["s"])

    def group():
        return find_duplicates(C, cal["threshold"], pairs=(d["i"][keep], d["j"][keep]), compared=compared)

    groups = phase("group", group)
    p.close()
    fig = score_dedup(groups, uris, images)
    print(json.dumps({**out, "peak_mib": max(out[k]["step_hwm_mib"] for k in ("candidates", "prepare", "group")),
                      "candidates_same_as_run": same, "kept_same_as_run": bool(np.array_equal(keep, d["keep"])),
                      "precision": fig["precision"], "recall": fig["recall"]}), flush=True)


if __name__ == "__main__":
    main()
