"""How well can the crossing check be passed at all? The ceiling set by the measurement noise.

The check (``forecast_eval.crossing_check``) compares a forecast of the labels needed for error T
with the *observed* crossing: the first round whose test error is at or below T. That crossing is
itself noisy: each error is measured on ``n_test`` images (binomial noise) from a model whose
training has its own round-to-round noise. This script asks, per group of curves: if a forecast
knew the smooth curve exactly, how often would it land within +-15 % of the observed crossing?

- smooth curve: ``fit_curve`` on *all* rounds of each curve (the best estimate of the curve
  without the noise; no forecast is involved);
- noise: the scatter of the rounds, from second differences ``(e[i-1] - 2 e[i] + e[i+1]) / sqrt(6)``
  (white noise of sd s gives sd s; a locally straight curve gives 0; from the 4th round on, where
  10-label steps bend the curve little), against the binomial standard deviation
  ``sqrt(e (1 - e) / n_test)``: about equal, the scatter is the test split's; above, training noise
  adds to it (a residual curvature would too, so the excess is an upper bound);
- ceiling: 2,000 simulated curves per checkable (curve, target), each round's error redrawn
  around the smooth curve (a) from an independent binomial per round, (b) from Gaussian noise of
  the group's measured scatter (its ratio to the binomial sd, at each round's level). A fixed test
  split's errors are correlated from round to round (warm-started models miss mostly the same
  images), so the measured scatter can be below the binomial: (a) is then the pessimistic case;
  the "perfect forecast" (the smooth curve's own crossing, continuous) is scored against the
  simulated first crossing with the rule's +-15 %.

    python benchmarks/loop/crossing_noise.py     # prints the table, writes crossing_noise.json
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np

import forecast_eval as fe
from curator.forecast import fit_curve

HERE = Path(__file__).resolve().parent
DRAWS = 2000


def _first_crossing(errors: np.ndarray, n: np.ndarray, target: float) -> np.ndarray:
    """Labels of the first round at or below ``target`` per row (inf where none)."""
    hit = errors <= target
    first = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
    return np.where(first >= 0, n[np.maximum(first, 0)], np.inf)


def analyse(k: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    curves = fe.grouped_curves()
    resid = collections.defaultdict(list)  # group -> (residual, binomial sd)
    rises = collections.defaultdict(list)  # group -> largest round-to-round rise of each curve
    smooth = {}
    for name, (group, n_test, d) in curves.items():
        n = np.array(sorted(d), float)
        e = np.array([d[x] for x in sorted(d)])
        if len(n) < k + 1:
            continue
        rises[group].append(float(max(np.diff(e).max(), 0.0)))
        s = fit_curve(n, e)
        smooth[name] = (group, n_test, n, s)
        # scatter from second differences (e[i-1] - 2 e[i] + e[i+1], variance 6 sigma^2 for white noise
        # on a locally straight curve), from the 4th round on (the steep start bends too much)
        d2 = (e[2:] - 2 * e[1:-1] + e[:-2])[2:] / np.sqrt(6)
        mid = np.clip(e[1:-1][2:], 1e-4, 1 - 1e-4)
        resid[group].extend(zip(d2, np.sqrt(mid * (1 - mid) / n_test)))
    out = {}
    checks = collections.defaultdict(list)
    for name, group, n_test, t, _, _, real in fe.checkable(k):
        checks[group].append((name, t, real))
    for group, pairs in sorted(resid.items()):
        r, sd = (np.array(v) for v in zip(*pairs))
        excess = max(float(np.mean(r ** 2) - np.mean(sd ** 2)), 0.0)
        ratio = float(np.sqrt(np.mean(r ** 2) / np.mean(sd ** 2)))
        per_t = collections.defaultdict(lambda: {"binomial": [], "measured": [], "observed": []})
        for name, t, real in checks[group]:
            _, n_test, n, s = smooth[name]
            mu = np.clip(s(n), 1e-4, 1 - 1e-4)
            perfect = s.labels_for(t)
            sims = {"binomial": rng.binomial(n_test, mu, size=(DRAWS, len(n))) / n_test}
            sim_sd = ratio * np.sqrt(mu * (1 - mu) / n_test)  # the group's measured scatter, at each round's level
            sims["measured"] = mu + rng.normal(0, 1, size=(DRAWS, len(n))) * sim_sd
            for label, sim in sims.items():
                cross = _first_crossing(sim, n, t)
                ok = np.isfinite(cross) & (cross > n[k - 1])  # checkable: crossed after the fitted rounds
                within = np.abs(perfect / cross[ok] - 1) <= fe.WITHIN
                per_t[t][label].append(float(within.mean()) if ok.any() else float("nan"))
            per_t[t]["observed"].append(bool(abs(perfect / real - 1) <= fe.WITHIN))
        out[group] = {
            "rounds": len(r), "rms_scatter_pts": round(float(np.sqrt(np.mean(r ** 2))) * 100, 3),
            "rms_binomial_sd_pts": round(float(np.sqrt(np.mean(sd ** 2))) * 100, 3),
            "excess_sd_pts": round(float(np.sqrt(excess)) * 100, 3),
            "scatter_over_binomial": round(ratio, 2),
            "largest_rise_pts": {"mean": round(float(np.mean(rises[group])) * 100, 2),
                                 "max": round(float(np.max(rises[group])) * 100, 2)},
            "targets": {f"{t:.2f}": {"checks": len(v["observed"]),
                                     "ceiling_binomial": round(float(np.nanmean(v["binomial"])), 3),
                                     "ceiling_measured": round(float(np.nanmean(v["measured"])), 3),
                                     "smooth_curve_vs_observed": f"{sum(v['observed'])}/{len(v['observed'])}"}
                        for t, v in sorted(per_t.items(), reverse=True)},
        }
    return out


def main() -> None:
    res = analyse()
    print("| group | rounds | rms scatter (pts) | binomial sd (pts) | excess sd (pts) | largest rise a curve, mean / max (pts) |")
    print("|---|---|---|---|---|---|")
    for g, v in res.items():
        r = v["largest_rise_pts"]
        print(f"| {g} | {v['rounds']} | {v['rms_scatter_pts']:.2f} | {v['rms_binomial_sd_pts']:.2f} | "
              f"{v['excess_sd_pts']:.2f} | {r['mean']:.2f} / {r['max']:.2f} |")
    print("\nShare within +-15 % of the observed crossing that a forecast knowing the smooth curve would get")
    print("| group | target | checks | independent binomial noise | the measured scatter | smooth curve vs the real crossing |")
    print("|---|---|---|---|---|---|")
    for g, v in res.items():
        for t, c in v["targets"].items():
            print(f"| {g} | {float(t):.0%} | {c['checks']} | {c['ceiling_binomial']:.2f} | {c['ceiling_measured']:.2f} | {c['smooth_curve_vs_observed']} |")
    (HERE / "crossing_noise.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
