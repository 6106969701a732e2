"""How well does the learning-curve forecast extrapolate? Checked on recorded curves.

Every learning curve the benchmarks recorded (the label-efficiency runs: 8
policies x 3 seeds, 20 labels then 10 a round; and the 10-round loop runs) is
cut after its first K points; the forecast is fitted on those and compared
with the later points, up to twice the labels of the last fitted point. The
current fit (``curator.forecast.fit_curve``: log space, offset by AICc) is
compared with the fit it replaced (least squares in linear space, offset
always free), kept here as ``linear_fit``.

    python benchmarks/loop/forecast_eval.py      # prints the table, writes forecast_eval.json

Crossing check (issue 16 item 5; ``crossing_check``): the question a user asks of the
forecast is "how many labels until error T?". Rule, fixed before the candidate fits were
compared (session 19):

- curves: every recorded curve with at least 7 rounds: MNIST first recipe
  (label_efficiency/results.jsonl), MNIST v2 (results_v2_*.jsonl), the MNIST loop runs
  (loop/results*.jsonl) and scikit-learn digits v2 (results_digits_v2.jsonl, all seeds);
- fit on the first 6 rounds; targets 10 %, 5 %, 3 % and 2 % error; a (curve, target) is
  checkable when the first round at or below the target comes after the 6th round;
- score: the share of checkable forecasts within +-15 % of that real crossing, averaged
  over the four groups (so the 24 first-recipe curves do not outvote the rest); ties and
  near-ties (within one forecast per group) broken by the median |forecast / real - 1|
  over all checks; a candidate must keep MNIST ``curator@v2`` at 5 % within +-15 % on 3
  of 3 seeds.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np

from curator.forecast import Curve, fit_curve

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def linear_fit(n, e) -> Curve:
    """The earlier fit: grid over b, linear least squares for a and c (c clipped to [0, min e])."""
    exps = np.linspace(0.05, 2.0, 196)
    x = n[None, :] ** -exps[:, None]
    xm, em = x.mean(axis=1), e.mean()
    var = ((x - xm[:, None]) ** 2).sum(axis=1)
    a = np.where(var > 0, ((x - xm[:, None]) * (e - em)).sum(axis=1) / np.maximum(var, 1e-300), 0.0)
    c = np.clip(em - a * xm, 0.0, e.min())
    a = np.maximum(((e - c[:, None]) * x).sum(axis=1) / (x * x).sum(axis=1), 0.0)
    i = int(np.argmin(((c[:, None] + a[:, None] * x - e) ** 2).sum(axis=1)))
    return Curve(float(a[i]), float(exps[i]), float(c[i]))


def curves() -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = collections.defaultdict(dict)
    for line in open(ROOT / "benchmarks" / "label_efficiency" / "results.jsonl"):
        r = json.loads(line)
        if "policy" in r and "test_error" in r:
            out[f"label_efficiency {r['policy']} seed {r['seed']}"][int(r["labels"])] = float(r["test_error"])
    for path in sorted(HERE.glob("results*.jsonl")):
        for line in open(path):
            r = json.loads(line)
            if r.get("step") == "loop":
                out[f"loop {path.name}"] = {int(n): float(e) for n, e in r["errors"]}
    return out


def main() -> None:
    fits = {"log space, offset by AICc (current)": fit_curve, "linear least squares (earlier)": linear_fit}
    table = []
    for k in (5, 6, 8, 10):
        errs = collections.defaultdict(list)
        for name, d in curves().items():
            n = np.array(sorted(d), float)
            e = np.array([d[x] for x in sorted(d)])
            later = [(ni, ei) for ni, ei in zip(n[k:], e[k:]) if ni <= 2 * n[k - 1]]
            if len(n) < k + 3 or not later:
                continue
            for label, fit in fits.items():
                c = fit(n[:k], e[:k])
                errs[label].append(float(np.mean([abs(c(ni) - ei) for ni, ei in later])))
        for label, v in errs.items():
            table.append({"fit_points": k, "fit": label, "curves": len(v),
                          "mean_abs_error": round(float(np.mean(v)), 4), "median_abs_error": round(float(np.median(v)), 4)})
    print("| points fitted | fit | curves | mean abs. error | median abs. error |")
    print("|---|---|---|---|---|")
    for r in table:
        print(f"| {r['fit_points']} | {r['fit']} | {r['curves']} | {r['mean_abs_error']:.4f} | {r['median_abs_error']:.4f} |")
    (HERE / "forecast_eval.json").write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
