"""The curve of results.jsonl rows of one data set: validation estimate (± 2 SE) beside the true test
error, one panel per (model, seed). python plot.py results.jsonl procedural out.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from table import se  # noqa: E402

rows = [json.loads(line) for line in open(sys.argv[1]) if json.loads(line)["data"] == sys.argv[2]]
keys = sorted({(r.get("model", "built-in CNN"), r["seed"], r["pool"]) for r in rows})
fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False, sharey=True)
for ax, (model, seed, pool) in zip(axes[0], keys):
    sel = sorted((r for r in rows if (r.get("model", "built-in CNN"), r["seed"], r["pool"]) == (model, seed, pool)),
                 key=lambda r: r["n_labels"])
    x = [r["n_labels"] for r in sel]
    ax.errorbar(x, [r["estimate"] for r in sel], yerr=[2 * se(r) for r in sel], marker="o", capsize=3,
                label="validation estimate (± 2 SE)")
    ax.plot(x, [r["true_test_error"] for r in sel], marker="s", label="true test error (generator's class)")
    ax.axhline(1 - 1 / sel[0].get("n_classes", 10), ls=":", c="grey", label="chance")
    ax.set(title=f"{model}, seed {seed}, pool {pool:,}", xlabel="human labels", ylim=(0, 1))
axes[0][0].set_ylabel("error")
axes[0][0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[3], dpi=90)
