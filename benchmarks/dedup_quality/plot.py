"""Table (markdown, stdout) and plot.png of results.jsonl: recall and precision per copy kind per method."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ["rotate", "zoom", "crop", "colour", "jpeg", "noise", "combo"]
METHODS = ["thumb@0.99", "thumb-calibrated", "ssl-calibrated", "thumb-calibrated-s1", "ssl-calibrated-s1",
           "verified-calibrated"]
PLOTTED = ["thumb@0.99", "thumb-calibrated", "ssl-calibrated", "verified-calibrated"]


def main(path=HERE / "results.jsonl"):
    rows = [json.loads(line) for line in open(path)]
    dedup = [r for r in rows if r["unit"] == "dedup"]
    datas = sorted({r["data"] for r in dedup})
    for d in datas:
        print(f"\n{d}: pair precision / recall per copy kind (overall P, R; distinct originals dropped)\n")
        print("| method | threshold | " + " | ".join(KINDS) + " | overall P | overall R | originals dropped |")
        print("|---" * (len(KINDS) + 5) + "|")
        for m in METHODS:
            r = next((x for x in reversed(dedup) if x["data"] == d and x["method"] == m), None)  # the newest
            if r is None:
                continue
            cells = [f"{r[f'precision_{k}']:.3f} / {r[f'recall_{k}']:.3f}" for k in KINDS]
            print(f"| {m} | {r['threshold']:.4f} | " + " | ".join(cells) +
                  f" | {r['precision']:.3f} | {r['recall']:.3f} | {r['distinct_originals_dropped']} |")
    knn = [r for r in rows if r["unit"] == "knn"]
    if knn:
        print("\nMNIST class separation: test error (10,000 test digits), mean over 3 label draws\n")
        print("| embedding | labels | 1-NN error | label propagation error |")
        print("|---|---|---|---|")
        for emb in ("pca50", "thumb", "ssl"):
            for lab in (20, 100):
                sel = [r for r in knn if r["embedding"] == emb and r["labels"] == lab]
                if not sel:
                    continue
                e1 = sum(r["test_error_1nn"] for r in sel) / len(sel)
                lp = [r["test_error_lp"] for r in sel if "test_error_lp" in r]
                lps = f"{sum(lp) / len(lp):.3f}" if lp else "-"
                print(f"| {emb} | {lab} | {e1:.3f} | {lps} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(len(datas), 2, figsize=(12, 3.6 * len(datas)), squeeze=False)
    for i, d in enumerate(datas):
        for j, what in enumerate(("recall", "precision")):
            ax = axes[i][j]
            for m_i, m in enumerate(PLOTTED):
                r = next((x for x in reversed(dedup) if x["data"] == d and x["method"] == m), None)  # the newest
                if r is None:
                    continue
                xs = [k + (m_i - 1.5) * 0.2 for k in range(len(KINDS) + 1)]
                ys = [r[f"{what}_{k}"] for k in KINDS] + [r[what]]
                ax.bar(xs, ys, width=0.2, label=f"{m} (t={r['threshold']:.3f})")
            ax.axhline(0.95 if what == "recall" else 0.99, color="k", lw=0.8, ls="--")
            ax.set_xticks(range(len(KINDS) + 1), KINDS + ["all"])
            ax.set_ylim(0, 1.05)
            ax.set_title(f"{d}: pair {what} per copy kind")
            ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(HERE / "plot.png", dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:])
