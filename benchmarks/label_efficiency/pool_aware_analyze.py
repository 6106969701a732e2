"""Table and plot of pool_aware.jsonl: labels needed for 5 % and 2 % test error per run and seed.

    python benchmarks/label_efficiency/pool_aware_analyze.py   # prints Markdown, writes pool_aware.png
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main():
    rows = [json.loads(x) for x in (HERE / "pool_aware.jsonl").read_text().splitlines() if x.strip()]
    runs = defaultdict(list)
    for r in rows:
        runs[(r["data"], r["embedding"], r["run"], r["seed"])].append(r)
    print("| data | embedding | run | seed | error at 20 | at 30 | at 40 | at 50 | at 100 | labels to 5% | labels to 2% | "
          "run wall s | run CPU s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    # "+selftrain" runs: "(head)" marks a round without the self-training stage (--self-train-at)
    curves = defaultdict(dict)
    for key in sorted(runs):
        rs = sorted(runs[key], key=lambda r: r["n_labels"])
        err = {r["n_labels"]: r["test_error"] for r in rs}
        lp_only = {r["n_labels"] for r in rs if r.get("self_trained") is False}  # +selftrain runs' other rounds
        curves[key[:3]][key[3]] = {n: e for n, e in err.items() if n not in lp_only}

        def reach(t):
            hit = [n for n, e in sorted(err.items()) if e <= t]
            return str(hit[0]) if hit else f"> {max(err)}"

        cell = lambda n: (f"{err[n] * 100:.2f} %" + (" (head)" if n in lp_only else "")  # noqa: E731
                          if n in err else "-")
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {cell(20)} | {cell(30)} | {cell(40)} | {cell(50)} | {cell(100)} | {reach(0.05)} | "
              f"{reach(0.02)} | {rs[-1]['run_wall_s']:.0f} | {rs[-1]['run_cpu_s']:.0f} | "
              f"{np.mean([r['load1'] for r in rs]):.1f} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    datas = sorted({k[0] for k in curves})
    fig, axes = plt.subplots(1, len(datas), figsize=(6 * len(datas), 4.5), squeeze=False)
    for ax, data in zip(axes[0], datas):
        for (d, emb, run), seeds in sorted(curves.items()):
            if d != data:
                continue
            ns = sorted(set.intersection(*(set(e) for e in seeds.values())))
            if not ns:
                continue
            m = np.array([[seeds[s][n] for n in ns] for s in seeds])
            ax.plot(ns, m.mean(0) * 100, "o-" if not run.startswith("random") else "s--", label=f"{run} ({emb}, {len(seeds)} seeds)")
            ax.fill_between(ns, m.min(0) * 100, m.max(0) * 100, alpha=0.15)
        for t in (5, 2):
            ax.axhline(t, color="gray", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("labels")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{data}: typical-first selection + semi-supervised head")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "pool_aware.png", dpi=90)


if __name__ == "__main__":
    main()
