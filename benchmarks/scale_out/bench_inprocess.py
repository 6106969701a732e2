"""10M in-process: near duplicates + novelty + a 10,000-sample selection over a memory-mapped pool.

    nice -n 10 python benchmarks/scale_out/bench_inprocess.py --sizes 1000000 10000000
    python benchmarks/scale_out/bench_inprocess.py --report          # Markdown table of results.jsonl
    python benchmarks/scale_out/bench_inprocess.py --tier-compare 1000000   # in-memory vs streamed self-join

The pool is ``benchmarks/dedup_scale``'s planted generator (``make_pool``: n/1000 Gaussian clusters, 2 % exact
copies, 5 % near copies at cosine 0.993-0.9995, n/2000 hidden copies of labeled samples, 1,000 labeled rows),
written chunk by chunk to a ``.npy`` (in a child process, so the measured process never held it) and opened
with ``mmap_mode="r"``. Each size runs in its own process; each stage (generate, dedup, novelty, select,
score) appends one JSON line to the results file as soon as it ends, so a stop loses nothing.

Stages use the public API only: ``curator.find_duplicates`` and ``curator.novelty.novelty`` on the memmap (the
streamed tier of ``curator.index`` above ``STREAM_MIN_N``), then the 10,000 samples with the highest novelty,
at most one per duplicate group and none within the threshold of a labeled sample
(``curator.policies.base.top_k`` + ``curator.policies.filters.duplicate_free_order``, the ranking
``DropDuplicates(Novelty-score)`` walks). Peak memory: ``ru_maxrss`` (counts the memmap's pages this process
touched) and, sampled every 50 ms from /proc/self/status, the anonymous part (``RssAnon``: what the code
allocated) and the file-backed part (``RssFile``: memmap pages resident in this process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIM = 128
LABELED = 1000
BUDGET = 10_000
CHUNK = 1 << 20
DATA = Path(os.environ.get("SCALE_OUT_DATA", "/tmp/curator_scale_out"))


# --------------------------------------------------------------------------- data


def generate(n: int, folder: Path, seed: int = 0) -> None:
    """``make_pool`` of benchmarks/dedup_scale (same recipe, same parameters), written by chunks.

    Logical rows: n_src originals, n_lab_copies hidden copies of labeled rows, n_exact exact copies,
    n_near near copies; logical row r is stored at position perm[r] (the shuffle), so copies land
    anywhere in the file, far from their originals.
    """
    from numpy.lib.format import open_memmap

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    k = max(10, n // 1000)
    centres = rng.standard_normal((k, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(0.35, 0.8, k).astype(np.float32)
    n_exact, n_near = int(0.02 * n), int(0.05 * n)
    n_orig = n - n_exact - n_near
    n_lab_copies = max(1, n // 2000)
    n_src = n_orig - n_lab_copies

    def draw(count):
        lab = rng.integers(0, k, count)
        x = centres[lab] + rng.standard_normal((count, DIM), dtype=np.float32) * (spread[lab, None] / np.sqrt(DIM))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    perm = rng.permutation(n)
    X = open_memmap(folder / "x.part.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    origin = np.empty(n, np.int64)  # by position
    labeled_copy = np.zeros(n, bool)

    def put(logical_start, rows):
        pos = perm[logical_start:logical_start + len(rows)]
        order = np.argsort(pos)
        X[pos[order]] = rows[order]
        return pos

    for s in range(0, n_src, CHUNK):
        e = min(n_src, s + CHUNK)
        pos = put(s, draw(e - s))
        origin[pos] = pos
    L = draw(LABELED)
    lab_src = rng.choice(LABELED, n_lab_copies)
    near = L[lab_src] + rng.standard_normal((n_lab_copies, DIM), dtype=np.float32) * (0.05 / np.sqrt(DIM))
    pos = put(n_src, near / np.linalg.norm(near, axis=1, keepdims=True))
    origin[pos] = n + lab_src  # copies of one labeled sample are copies of each other
    labeled_copy[pos] = True
    src = rng.choice(n_src, n_exact)  # logical originals
    for s in range(0, n_exact, CHUNK):
        sl = slice(s, min(n_exact, s + CHUNK))
        pos = put(n_orig + s, np.asarray(X[perm[src[sl]]]))
        origin[pos] = perm[src[sl]]
    near_src = rng.choice(rng.choice(n_src, max(1, n_near // 2), replace=False), n_near)
    for s in range(0, n_near, CHUNK):
        sl = slice(s, min(n_near, s + CHUNK))
        o = np.asarray(X[perm[near_src[sl]]])
        delta = rng.uniform(0.03, 0.12, len(o)).astype(np.float32)  # cos ~ 1 - delta^2 / 2
        noise = rng.standard_normal(o.shape, dtype=np.float32)
        noise -= (noise * o).sum(1, keepdims=True) * o  # orthogonal to the original
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        near = o + noise * delta[:, None]
        pos = put(n_orig + n_exact + s, near / np.linalg.norm(near, axis=1, keepdims=True))
        origin[pos] = perm[near_src[sl]]
    X.flush()
    del X
    np.save(folder / "origin.npy", origin)
    np.save(folder / "labeled.npy", L)
    np.save(folder / "labeled_copy.npy", labeled_copy)
    os.replace(folder / "x.part.npy", folder / "x.npy")  # complete data only under the final name


# --------------------------------------------------------------------------- measuring


class Memory:
    """Peak RSS, anonymous and file-backed, sampled from /proc/self/status every 50 ms."""

    def __init__(self):
        self.peak = {"rss": 0, "anon": 0, "file": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self):
        vals = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                vals[{"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}[key]] = int(rest.split()[0]) * 1024
        for k, v in vals.items():
            self.peak[k] = max(self.peak[k], v)

    def _run(self):
        while not self._stop.wait(0.05):
            self._sample()

    def reset(self):
        self._sample()
        self.peak = {"rss": 0, "anon": 0, "file": 0}
        self._sample()

    def gib(self) -> dict:
        self._sample()
        return {f"peak_{k}_gib": round(v / 2**30, 3) for k, v in self.peak.items()}


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _load() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def pair_scores(groups, origin: np.ndarray) -> dict:
    """Pair precision / recall of groups against the planted origin (vectorised: 10M rows, 1M groups)."""
    sizes = np.bincount(origin)
    truth = int((sizes * (sizes - 1) // 2).sum())
    if not groups:
        return {"true_pairs": truth, "predicted_pairs": 0, "precision": 1.0, "recall": 0.0, "largest_group": 0}
    lens = np.fromiter((len(g) for g in groups), np.int64, len(groups))
    members = np.concatenate(groups)
    gid = np.repeat(np.arange(len(groups)), lens)
    predicted = int((lens * (lens - 1) // 2).sum())
    _, c = np.unique(gid * (int(origin.max()) + 1) + origin[members], return_counts=True)
    hit = int((c * (c - 1) // 2).sum())
    return {"true_pairs": truth, "predicted_pairs": predicted, "precision": hit / predicted if predicted else 1.0,
            "recall": hit / truth if truth else 1.0, "largest_group": int(lens.max())}


# --------------------------------------------------------------------------- the round


def child(n: int, out: Path) -> None:
    import curator
    from curator import index
    from curator.dedup import DEFAULT_THRESHOLD
    from curator.novelty import novelty
    from curator.policies.base import top_k
    from curator.policies.filters import duplicate_free_order

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")  # phases, to stderr
    folder = DATA / str(n)
    if os.environ.get("SCALE_OUT_STREAM_MIN_N"):  # smoke tests of the streamed tier on a small pool
        index.STREAM_MIN_N = int(os.environ["SCALE_OUT_STREAM_MIN_N"])
    mem = Memory()
    base = {"n": n, "pid": os.getpid(), "stream_min_n": index.STREAM_MIN_N,
            "tier": "streamed" if index.is_streamed(n) else "in-memory", "nproc": os.cpu_count()}

    def emit(stage, t0, c0, load0, **extra):
        row = {**base, "stage": stage, "wall_s": round(time.perf_counter() - t0, 2),
               "cpu_s": round(_cpu() - c0, 2), **mem.gib(),
               "ru_maxrss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
               "loadavg_before": load0, "loadavg_after": _load(), **extra}
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "info"}), flush=True)

    X = np.load(folder / "x.npy", mmap_mode="r")
    origin = np.load(folder / "origin.npy")
    L = np.load(folder / "labeled.npy")
    labeled_copy = np.load(folder / "labeled_copy.npy")
    assert X.shape == (n, DIM) and isinstance(X, np.memmap)

    mem.reset()
    t_round, c_round, load_round = time.perf_counter(), _cpu(), _load()
    t0, c0, l0 = time.perf_counter(), _cpu(), _load()
    groups, info = curator.find_duplicates(X, return_info=True)
    emit("dedup", t0, c0, l0, info=info, groups=len(groups))

    t0, c0, l0 = time.perf_counter(), _cpu(), _load()
    nov = novelty(X, L, k=1)
    emit("novelty", t0, c0, l0, k=1, reference=len(L))

    t0, c0, l0 = time.perf_counter(), _cpu(), _load()
    group_of = np.full(n, -1, np.int64)
    for g, members in enumerate(groups):
        group_of[members] = g
    blocked = nov <= 1.0 - DEFAULT_THRESHOLD + 1e-6  # within the threshold of a labeled sample
    ranking = top_k(nov, min(n, 4 * BUDGET), np.random.default_rng(0))  # best first, seeded ties
    chosen = duplicate_free_order(ranking, group_of, blocked, BUDGET)
    emit("select", t0, c0, l0, budget=BUDGET, chosen=len(chosen))
    total = {"round_wall_s": round(time.perf_counter() - t_round, 2), "round_cpu_s": round(_cpu() - c_round, 2),
             "round_loadavg_before": load_round}

    t0, c0, l0 = time.perf_counter(), _cpu(), _load()
    scores = pair_scores(groups, origin)
    used = group_of[chosen]
    emit("score", t0, c0, l0, **scores, **total,
         planted_labeled_copies=int(labeled_copy.sum()),
         planted_labeled_copies_blocked=int((blocked & labeled_copy).sum()),
         chosen_labeled_copies=int(labeled_copy[chosen].sum()),
         chosen_two_of_one_group=int((used >= 0).sum() - len(np.unique(used[used >= 0]))),
         chosen_same_origin_pairs=int(len(chosen) - len(np.unique(origin[chosen]))),
         threshold=DEFAULT_THRESHOLD)


def tier_compare(n: int, out: Path) -> None:
    """The self-join of the 1M pool through the in-memory tier and through the streamed tier."""
    from curator import index

    X = np.load(DATA / str(n) / "x.npy", mmap_mode="r")
    for tier in ("in-memory", "streamed"):
        t0, c0, load0 = time.perf_counter(), _cpu(), _load()
        old = index.STREAM_MIN_N
        index.STREAM_MIN_N = n - 1 if tier == "streamed" else max(old, n)
        try:
            i, j, _, info = index.self_pairs(X if tier == "streamed" else np.asarray(X), 0.99 - 1e-12)
        finally:
            index.STREAM_MIN_N = old
        row = {"stage": "tier_compare", "n": n, "tier": tier, "wall_s": round(time.perf_counter() - t0, 2),
               "cpu_s": round(_cpu() - c0, 2), "pairs": int(len(i)), "info": info,
               "loadavg_before": load0, "loadavg_after": _load()}
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def report(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print("| n | stage | wall s | CPU s | peak RSS GiB (anon + file) | ru_maxrss GiB | load before -> after | notes |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["stage"] == "tier_compare":
            print(f"| {r['n']:,} | self-join, {r['tier']} tier | {r['wall_s']} | {r['cpu_s']} | | | "
                  f"{r['loadavg_before'][0]} -> {r['loadavg_after'][0]} | {r['pairs']:,} pairs |")
            continue
        note = ""
        if r["stage"] == "score":
            note = (f"precision {r['precision']:.4f}, recall {r['recall']:.4f}, round {r['round_wall_s']} s wall / "
                    f"{r['round_cpu_s']} CPU s, labeled copies blocked {r['planted_labeled_copies_blocked']}/"
                    f"{r['planted_labeled_copies']}")
        elif r["stage"] == "dedup":
            i = r["info"]
            note = (f"{i['index']}, {i.get('search_cells')} cells, {i.get('search_mean_probes', 0):.2f} probes a "
                    f"row, {i.get('search_truncated'):,} truncated, {r['groups']:,} groups")
            if "search_seconds" in i:
                note += ", phases s: " + ", ".join(f"{k} {v}" for k, v in i["search_seconds"].items())
        elif r["stage"] == "generate":
            note = "child process, not part of the round"
        print(f"| {r['n']:,} | {r['stage']} | {r['wall_s']} | {r.get('cpu_s', '')} | "
              f"{r.get('peak_rss_gib', '')} ({r.get('peak_anon_gib', '')} + {r.get('peak_file_gib', '')}) | "
              f"{r.get('ru_maxrss_gib', '')} | {r['loadavg_before'][0]} -> {r['loadavg_after'][0]} | {note} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    ap.add_argument("--out", type=Path, default=HERE / "results.jsonl")
    ap.add_argument("--child", type=int)
    ap.add_argument("--generate", type=int)
    ap.add_argument("--tier-compare", type=int)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.report:
        return report(args.out)
    if args.generate:
        return generate(args.generate, DATA / str(args.generate))
    if args.child:
        return child(args.child, args.out)
    if args.tier_compare:
        return tier_compare(args.tier_compare, args.out)
    env = {**os.environ, "CURATOR_PROGRESS": "0"}
    for n in args.sizes:
        if not (DATA / str(n) / "x.npy").exists():
            t0, load0 = time.perf_counter(), _load()
            proc = subprocess.run([sys.executable, __file__, "--generate", str(n)], env=env)
            row = {"n": n, "stage": "generate", "wall_s": round(time.perf_counter() - t0, 2), "rc": proc.returncode,
                   "loadavg_before": load0, "loadavg_after": _load(), "path": str(DATA / str(n) / "x.npy")}
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            if proc.returncode:
                continue
        proc = subprocess.run([sys.executable, __file__, "--child", str(n), "--out", str(args.out)], env=env)
        if proc.returncode:
            with open(args.out, "a") as fh:
                fh.write(json.dumps({"n": n, "stage": "error", "rc": proc.returncode, "wall_s": 0,
                                     "loadavg_before": _load(), "loadavg_after": _load()}) + "\n")


if __name__ == "__main__":
    main()
