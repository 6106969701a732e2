"""Peak RSS of the verified dedup's candidate search (``curator.copyverify.candidates``) against pool size.

The search holds the pool's cold-start vectors (given, as a memory map like the store's) and two sets of
rotated query thumbnails; this measures what that costs at each size in a fresh process, with synthetic
images made on the fly (the memory does not depend on the pictures; decoding 100k files would take ~10
CPU minutes). One JSON line per run: n, peak RSS (VmHWM) before and after the search, its growth, the
anonymous and file-backed parts at the end, pairs, seconds.

    PYTHONPATH=$PWD python benchmarks/own_data/candidates_rss.py --n 10000 100000 --out F.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


class Synthetic:
    """``n`` RGB images of 48 x 64 (uint8), made from their position when indexed: a pool without files."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def _one(self, k: int) -> np.ndarray:
        rng = np.random.default_rng(k)
        return rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self._one(k) for k in range(*key.indices(self.n))]
        return self._one(int(key))


def _status() -> dict:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) // 1024
    return out


def one(n: int) -> dict:
    from curator import coldstart, copyverify

    d = coldstart.dim(coldstart.THUMB_SIDE)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vectors.npy")
        rng = np.random.default_rng(0)
        out = np.lib.format.open_memmap(path, "w+", np.float32, (n, d))
        for s in range(0, n, 8192):
            x = rng.normal(size=(min(8192, n - s), d)).astype(np.float32)
            out[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        out.flush()
        del out
        C = np.load(path, mmap_mode="r")
        before = _status()
        t0 = time.perf_counter()
        i, _ = copyverify.candidates(Synthetic(n), embeddings=C)
        after = _status()
    return {"n": n, "hwm_before_mib": before["VmHWM"], "hwm_after_mib": after["VmHWM"],
            "growth_mib": after["VmHWM"] - before["VmHWM"], "anon_end_mib": after["RssAnon"],
            "file_end_mib": after["RssFile"], "pairs": int(len(i)), "s": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", required=True)
    ap.add_argument("--label", default="")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one(a.one)))
        return 0
    for n in a.n:  # each size in a fresh process: VmHWM is the process's
        got = subprocess.run([sys.executable, __file__, "--one", str(n), "--out", a.out], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        row = {**json.loads(got), "label": a.label, "load": os.getloadavg()[0]}
        with open(a.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
