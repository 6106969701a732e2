"""Near-duplicate detection + novelty + a 1,000-sample selection over synthetic clustered embeddings.

Each (size, method) runs in its own subprocess, so ``ru_maxrss`` is that run's
peak memory; one JSON line per run is appended to ``results.jsonl`` at once.

    nice -n 10 python benchmarks/dedup_scale/bench.py --sizes 100000 300000 1000000 --fiftyone 100000
    python benchmarks/dedup_scale/bench.py --crossover     # exact vs partitioned self-join at small n

Pool: ``n`` unit vectors of dimension 128 in ``n/1000`` Gaussian clusters of
varying spread (pairwise cosine inside a cluster about 0.6-0.9), shuffled;
2 % of rows are exact copies and 5 % near copies (1-3 per original, cosine to
the original 0.993-0.9995) of other rows. Truth: rows with the same origin.
Labeled set: 1,000 other draws from the same clusters; n/2,000 pool rows are
near copies of labeled samples (cosine about 0.9988) and must never be chosen. The round times
``find_duplicates`` (default threshold), novelty (``curator.novelty.novelty``,
distance to the nearest labeled sample, through ``curator.index``), and a
duplicate-free top-1,000 by novelty (``duplicate_free_order`` of
``curator.policies.filters``, with pool rows near a labeled one blocked).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIM = 128
BUDGET = 1000
LABELED = 1000


def make_pool(n: int, seed: int = 0):
    """(embeddings (n, 128), origin (n,), labeled embeddings (1000, 128), rows copying a labeled one)."""
    rng = np.random.default_rng(seed)
    k = max(10, n // 1000)
    centres = rng.standard_normal((k, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(0.35, 0.8, k).astype(np.float32)
    n_exact, n_near = int(0.02 * n), int(0.05 * n)
    n_orig = n - n_exact - n_near
    n_lab_copies = max(1, n // 2000)
    n_src = n_orig - n_lab_copies  # originals that may be copied (the rest become copies of labeled ones)

    def draw(count):
        lab = rng.integers(0, k, count)
        x = centres[lab] + rng.standard_normal((count, DIM), dtype=np.float32) * (spread[lab, None] / np.sqrt(DIM))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    X = np.empty((n, DIM), np.float32)
    X[:n_orig] = draw(n_orig)
    origin = np.arange(n, dtype=np.int64)
    src = rng.choice(n_src, n_exact)
    X[n_orig:n_orig + n_exact] = X[src]
    origin[n_orig:n_orig + n_exact] = src
    # near copies: 1-3 per original
    near_src = rng.choice(rng.choice(n_src, max(1, n_near // 2), replace=False), n_near)
    delta = rng.uniform(0.03, 0.12, n_near).astype(np.float32)  # cos ~ 1 - delta^2 / 2
    noise = rng.standard_normal((n_near, DIM), dtype=np.float32)
    noise -= (noise * X[near_src]).sum(1, keepdims=True) * X[near_src]  # orthogonal to the original
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    near = X[near_src] + noise * delta[:, None]
    X[n_orig + n_exact:] = near / np.linalg.norm(near, axis=1, keepdims=True)
    origin[n_orig + n_exact:] = near_src
    L = draw(LABELED)
    # copies of labeled samples hidden in the pool, in rows no planted copy points to
    lab_src = rng.choice(LABELED, n_lab_copies)
    near = L[lab_src] + rng.standard_normal((n_lab_copies, DIM), dtype=np.float32) * (0.05 / np.sqrt(DIM))
    X[n_src:n_orig] = near / np.linalg.norm(near, axis=1, keepdims=True)
    origin[n_src:n_orig] = n + lab_src  # copies of one labeled sample are copies of each other
    perm = rng.permutation(n)
    inv = np.empty(n, np.int64)
    inv[perm] = np.arange(n)
    labeled_copy = np.zeros(n, bool)
    labeled_copy[n_src:n_orig] = True
    origin = origin[perm]
    pooled = origin < n
    origin[pooled] = inv[origin[pooled]]
    X, labeled_copy = X[perm], labeled_copy[perm]
    return np.ascontiguousarray(X), origin, L, labeled_copy


def pair_scores(groups, origin):
    truth_sizes = np.bincount(origin)
    truth = int((truth_sizes * (truth_sizes - 1) // 2).sum())
    predicted = hit = 0
    for g in groups:
        predicted += len(g) * (len(g) - 1) // 2
        _, c = np.unique(origin[g], return_counts=True)
        hit += int((c * (c - 1) // 2).sum())
    return {"true_pairs": truth, "predicted_pairs": predicted,
            "precision": hit / predicted if predicted else 1.0, "recall": hit / truth if truth else 1.0,
            "largest_group": max((len(g) for g in groups), default=0)}


def run_curator(n: int) -> dict:
    from curator.dedup import DEFAULT_THRESHOLD, find_duplicates, near_labeled
    from curator.novelty import novelty
    from curator.policies.filters import duplicate_free_order

    X, origin, L, labeled_copy = make_pool(n)
    c0 = _cpu()
    t0 = time.perf_counter()
    groups, info = find_duplicates(X, return_info=True)
    t1 = time.perf_counter()
    nov = novelty(X, L, k=1)
    t2 = time.perf_counter()
    group_of = np.full(n, -1, np.int64)
    for g, members in enumerate(groups):
        group_of[members] = g
    # near a labeled sample <=> cosine distance to the nearest labeled one <= 1 - threshold: the k=1
    # novelty already holds it, so the round does not search the labeled set twice
    blocked = nov <= 1.0 - DEFAULT_THRESHOLD + 1e-6
    chosen = duplicate_free_order(np.argsort(-nov, kind="stable"), group_of, blocked, BUDGET)
    t3 = time.perf_counter()
    cpu = _cpu() - c0
    check = near_labeled(X[:20000], L, DEFAULT_THRESHOLD)
    assert (check == blocked[:20000]).all(), "novelty-derived blocking must equal near_labeled"
    assert len(chosen) == BUDGET
    assert len({int(group_of[c]) for c in chosen if group_of[c] >= 0}) == int((group_of[chosen] >= 0).sum())
    return {"dedup_s": t1 - t0, "novelty_s": t2 - t1, "select_s": t3 - t2, "total_s": t3 - t0,
            "round_cpu_s": cpu, "blocked_near_labeled": int(blocked.sum()),
            "planted_labeled_copies": int(labeled_copy.sum()),
            "planted_labeled_copies_blocked": int((blocked & labeled_copy).sum()),
            "chosen_labeled_copies": int(labeled_copy[chosen].sum()),
            "threshold": DEFAULT_THRESHOLD, "novelty_via": "curator.novelty.novelty (curator.index kNN)",
            "chosen_same_origin_pairs": int(len(chosen) - len(np.unique(origin[chosen]))),
            **pair_scores(groups, origin), "info": info}


def _cpu() -> float:
    """CPU seconds of this process (all threads): contention-free cost; / 2 = wall on 2 idle cores."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_fiftyone(n: int) -> dict:
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    import fiftyone as fo
    import fiftyone.brain as fob

    from curator.dedup import DEFAULT_THRESHOLD

    X, origin, _, _ = make_pool(n)
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.png") for i in range(n)])
    ids = ds.values("id")
    pos = {sid: i for i, sid in enumerate(ids)}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    c0 = _cpu()
    t0 = time.perf_counter()
    index = fob.compute_near_duplicates(ds, embeddings=X, threshold=1.0 - DEFAULT_THRESHOLD)
    t1 = time.perf_counter()
    cpu = _cpu() - c0
    groups = [np.array([pos[k]] + [pos[d] for d, _ in v]) for k, v in index.neighbors_map.items()]
    ds.delete()
    return {"dedup_s": t1 - t0, "total_s": t1 - t0, "round_cpu_s": cpu, "threshold_distance": 1.0 - DEFAULT_THRESHOLD,
            "peak_rss_before_compute_gib": rss_before, "note": "time and CPU of compute_near_duplicates only; "
            "peak RSS of this process (mongod runs apart and is not counted)",
            **pair_scores(groups, origin)}


def crossover() -> list[dict]:
    from curator import index

    out = []
    for n in (5_000, 10_000, 20_000, 40_000):
        X = make_pool(n)[0]
        row = {"n": n}
        for exact in (True, False):
            t = time.perf_counter()
            index.self_pairs(X, 0.99, exact=exact)
            row["flat_s" if exact else "partitioned_s"] = time.perf_counter() - t
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def report(path: Path) -> None:
    """Markdown table of a results file."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print("| method | n | total wall s | dedup s | novelty s | select s | round CPU s | peak RSS GiB | "
          "pair precision | pair recall | largest group | labeled copies blocked | load before -> after |")
    print("|" + "---|" * 13)
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | {r['n']:,} | error: {' '.join(r['error'])} |")
            continue
        blocked = (f"{r['planted_labeled_copies_blocked']}/{r['planted_labeled_copies']}"
                   if "planted_labeled_copies" in r else "-")
        print(f"| {r['method']} | {r['n']:,} | {r['total_s']:.1f} | {r['dedup_s']:.1f} | "
              f"{r.get('novelty_s', float('nan')):.1f} | {r.get('select_s', float('nan')):.2f} | "
              f"{r.get('round_cpu_s', float('nan')):.1f} | {r['peak_rss_gib']:.2f} | {r['precision']:.4f} | "
              f"{r['recall']:.4f} | {r['largest_group']} | {blocked} | "
              f"{r['loadavg_before'][0]} -> {r['loadavg_after'][0]} |")


def child(n: int, method: str) -> None:
    t = time.perf_counter()
    result = run_curator(n) if method == "curator" else run_fiftyone(n)
    result.update({
        "n": n, "method": method, "wall_with_data_s": time.perf_counter() - t,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    })
    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--fiftyone", type=int, nargs="*", default=[100_000])
    ap.add_argument("--out", type=Path, default=HERE / "results.jsonl")
    ap.add_argument("--child", nargs=2, metavar=("N", "METHOD"))
    ap.add_argument("--crossover", action="store_true")
    ap.add_argument("--report", action="store_true", help="print a Markdown table of --out")
    args = ap.parse_args()
    if args.report:
        report(args.out)
        return
    if args.child:
        child(int(args.child[0]), args.child[1])
        return
    if args.crossover:
        crossover()
        return
    runs = [(n, "curator") for n in args.sizes] + [(n, "fiftyone") for n in args.fiftyone]
    with tempfile.TemporaryDirectory() as fo_dir:
        env = {**os.environ, "FIFTYONE_DO_NOT_TRACK": "true", "FIFTYONE_DATABASE_DIR": fo_dir,
               "CURATOR_PROGRESS": "0"}
        for n, method in runs:
            load_before = Path("/proc/loadavg").read_text().split()[:3]
            proc = subprocess.run([sys.executable, __file__, "--child", str(n), method],
                                  capture_output=True, text=True, env=env)
            load_after = Path("/proc/loadavg").read_text().split()[:3]
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                row = {"n": n, "method": method, "error": proc.stderr.strip().splitlines()[-3:]}
            else:
                row = json.loads(lines[-1])
            row.update({"loadavg_before": load_before, "loadavg_after": load_after,
                        "machine": f"{os.cpu_count()}-core CPU VM (shared)"})
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k != "info"}), flush=True)


if __name__ == "__main__":
    main()
