"""The Markdown table of docs/nolabels.md from results.jsonl: python table.py results.jsonl"""
import json
import math
import sys


def se(r):
    """Binomial standard error of the estimate: CV validates every label once, holdout 20 % of them."""
    m = r["n_labels"] if r["metric"] == "cv_error" else 0.2 * r["n_labels"]
    return math.sqrt(r["estimate"] * (1 - r["estimate"]) / m)


rows = [json.loads(line) for line in open(sys.argv[1])]
print("| data (pool / test) | model | seed | round | labels | estimate | validation estimate (± 2 SE) | true test error "
      "| difference |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['data']} ({r['pool']:,} / {r['test']:,}) | {r.get('model', 'built-in CNN')} | {r['seed']} | {r['round']} | {r['n_labels']} | "
          f"{r['metric']} | {r['estimate']:.3f} ± {2 * se(r):.3f} | {r['true_test_error']:.3f} | "
          f"{r['estimate'] - r['true_test_error']:+.3f} |")
print()
def key_of(r):
    return r["data"], r["seed"], r.get("model", "built-in CNN")


for key in sorted({key_of(r) for r in rows}):
    sel = [r for r in rows if key_of(r) == key]
    d = [r["estimate"] - r["true_test_error"] for r in sel]
    inside = sum(abs(x) <= 2 * se(r) for x, r in zip(d, sel))
    print(f"- {key[0]} seed {key[1]} ({key[2]}): seed round `{sel[0]['seed_policy']}` covered {sel[0]['seed_classes']} of {sel[0].get('n_classes', 10)} "
          f"classes; mean |estimate - true| {sum(abs(x) for x in d) / len(d):.3f}, mean signed "
          f"{sum(d) / len(d):+.3f}, within 2 SE in {inside} of {len(sel)}; loop wall {sel[0]['loop_wall_s']:.0f} s "
          f"({sel[0]['machine']})")
