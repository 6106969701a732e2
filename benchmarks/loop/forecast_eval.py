"""How well does the learning-curve forecast extrapolate? Checked on recorded curves.

Every learning curve the benchmarks recorded (the label-efficiency runs: 8
policies x 3 seeds, 20 labels then 10 a round; and the 10-round loop runs) is
cut after its first K points; the forecast is fitted on those and compared
with the later points, up to twice the labels of the last fitted point. The
current fit (``curator.forecast.fit_curve``: log space, shape by AICc) is
compared with the fits it replaced: log space with an offset by AICc (session 18,
``fit_curve(shapes=("power", "floor"))``) and least squares in linear space, offset
always free (``linear_fit``).

    python benchmarks/loop/forecast_eval.py      # prints the tables, writes forecast_eval.json

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

Session 20 added two groups with larger test splits, same rule: digits with 1,000 test images
(797 pool; results_digits1000_v2_*.jsonl, 18 seeds) and the procedural RGB shapes (10,000 test
images; results_procedural_v2*.jsonl) with their own targets (``GROUP_TARGETS``, fixed before
their runs), and two candidates, each marked with what it had seen when it was written.
``crossing_table`` prints their checks one by one; ``crossing_noise.py`` the ceiling that
the noise of the observed crossing sets.

Session 21 (``NEW_CANDIDATES``, ``session21``; ``python forecast_eval.py --session21`` writes
forecast_eval_21.json): bounded (chance-anchored) fits and forecasts that wait until the shapes agree,
declared before the held-out curves (``held_out_21``) were run; none is better on every group.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np

from curator.forecast import _candidates, _aicc, BOUNDED, SHAPES, Curve, fit_curve, forecast

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LE = ROOT / "benchmarks" / "label_efficiency"
OLD = ("power", "floor")  # the session-18 fit
TARGETS = (0.10, 0.05, 0.03, 0.02)
#: Groups whose curves never come near the targets above get their own, fixed before their runs
#: (session 20): the procedural RGB shapes (8 classes, chance error 87.5 %) stay above 50 % error with
#: 320-640 random labels for the built-in CNN (label_efficiency/probes/procedural_pilot*.log).
GROUP_TARGETS = {"procedural-v2": (0.60, 0.50, 0.40)}
WITHIN = 0.15
#: The error of a guess, 1 - 1/classes, per group (session 21; the bounded fit needs it): 10 digit
#: classes everywhere but the procedural shapes' 8.
CHANCE = {"procedural-v2": 1 - 1 / 8}
TEN_CLASSES = 1 - 1 / 10


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


def _label_efficiency(paths, group: str, n_test: int) -> dict[str, tuple[str, int, dict[int, float]]]:
    """One curve per (policy, seed): a finished run first, else the longest partial one."""
    runs, key, done = collections.defaultdict(dict), {}, set()
    for path in paths:
        for line in open(path):
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "run" not in r:
                continue
            if r.get("done"):
                done.add(r["run"])
            else:
                runs[r["run"]][int(r["labels"])] = float(r["test_error"])
                key[r["run"]] = (r["policy"], r["seed"])
    best = {}
    for run, d in runs.items():
        rank = (run in done, len(d))
        if key[run] not in best or rank > best[key[run]][0]:
            best[key[run]] = (rank, d)
    return {f"{group} {p} seed {s}": (group, n_test, v[1]) for (p, s), v in sorted(best.items())}


def grouped_curves() -> dict[str, tuple[str, int, dict[int, float]]]:
    """name -> (group, test images, {labels: test error}) for every recorded curve."""
    out = {}
    out.update(_label_efficiency([LE / "results.jsonl"], "mnist-first-recipe", 10_000))
    out.update(_label_efficiency(sorted(LE.glob("results_v2_*.jsonl")), "mnist-v2", 10_000))
    out.update(_label_efficiency(sorted(LE.glob("results_digits_v2*.jsonl")), "digits-v2", 500))
    out.update(_label_efficiency(sorted(LE.glob("results_digits1000_v2*.jsonl")), "digits-1000-v2", 1_000))
    out.update(_label_efficiency(sorted(LE.glob("results_procedural_v2*.jsonl")), "procedural-v2", 10_000))
    for path in sorted(HERE.glob("results*.jsonl")):
        for line in open(path):
            r = json.loads(line)
            if r.get("step") == "loop":
                out[f"mnist-loop {path.name}"] = ("mnist-loop", 10_000, {int(n): float(e) for n, e in r["errors"]})
    return out


def curves() -> dict[str, dict[int, float]]:
    """The 27 curves of the value check (first-recipe label efficiency and the loop runs)."""
    return {k: d for k, (g, _, d) in grouped_curves().items() if g in ("mnist-first-recipe", "mnist-loop")}


# -- candidate fits tried for the crossing check (session 19) -------------------------------

def _isotonic(e: np.ndarray) -> np.ndarray:
    """Non-increasing least-squares envelope (pool adjacent violators)."""
    vals, counts = [], []
    for v in e:
        vals.append(float(v))
        counts.append(1)
        while len(vals) > 1 and vals[-2] < vals[-1]:
            v2, c2 = vals.pop(), counts.pop()
            vals[-1] = (vals[-1] * counts[-1] + v2 * c2) / (counts[-1] + c2)
            counts[-1] += c2
    return np.repeat(vals, counts)


def _weighted_power(n, e, n_test) -> Curve:
    """Pure power law, each log error weighted by its binomial precision n_test * e / (1 - e)."""
    w = n_test * e / (1 - e)
    x, y = np.log(n), np.log(e)
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    slope = np.average((x - xm) * (y - ym), weights=w) / np.average((x - xm) ** 2, weights=w)
    return Curve(float(np.exp(ym - slope * xm)), float(max(-slope, 0.0)), 0.0)


def _wlines(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares lines through the rows of ``(x, y)``, one weight per column."""
    w = w / w.sum()
    xm, ym = (x * w).sum(axis=1, keepdims=True), (y * w).sum(axis=1, keepdims=True)
    var = (w * (x - xm) ** 2).sum(axis=1)
    slope = np.where(var > 0, (w * (x - xm) * (y - ym)).sum(axis=1) / np.maximum(var, 1e-300), 0.0)
    return ym[:, 0] - slope * xm[:, 0], slope


def _weighted_shapes(n, e, n_test, shapes=("power", "floor", "shifted", "exp"), weighted=True) -> Curve:
    """The current fit (shape by AICc in log space) with each log error weighted by its binomial
    precision, 1 / var(log e) = n_test e / (1 - e) (session 20 candidate, added before the
    digits-1000 curves were run): the low errors at the end of the fitted rounds, measured on few
    test errors, pull the curve less. Weights normalised to mean 1, so AICc reads the weighted SSE."""
    e = np.maximum(e, max(1e-4, 0.5 / n_test))
    w = n_test * e / (1 - e) if weighted else np.ones_like(e)  # unweighted: the current fit
    w = w / w.mean()
    fits = []
    for shape in shapes:
        if shape == "exp":
            grid, x, k = np.zeros(1), n[None, :], 2
            y = np.log(e)[None, :]
        else:
            if shape == "power":
                cs, sh, k = np.zeros(1), np.zeros(1), 2
            elif shape == "floor":
                cs = np.linspace(0.0, e.min(), 50, endpoint=False)[1:]
                sh, k = np.zeros_like(cs), 3
            else:
                sh = np.geomspace(1.0, 50.0 * n.max(), 50)
                cs, k = np.zeros_like(sh), 3
            x = np.log(n[None, :] + sh[:, None])
            y = np.log(e[None, :] - cs[:, None])
        log_a, slope = _wlines(x, y, w)
        ok = (slope < 0) & (log_a < 700)
        if not ok.any():
            continue
        with np.errstate(over="ignore"):
            fitted = np.exp(log_a[:, None] + slope[:, None] * x) + (0 if shape == "exp" else cs[:, None])
        sse = (w * (np.log(fitted) - np.log(e)[None, :]) ** 2).sum(axis=1)
        sse = np.where(ok & np.isfinite(sse), sse, np.inf)
        i = int(np.argmin(sse))
        if shape == "exp":
            curve = Curve(float(np.exp(log_a[i])), -float(slope[i]), 0.0, kind="exp")
        else:
            curve = Curve(float(np.exp(log_a[i])), -float(slope[i]), float(cs[i]), float(sh[i]))
        fits.append((_aicc(float(sse[i]), len(n), k), curve))
    if not fits:
        return fit_curve(n, e)  # errors that did not fall: the current fit's flat answer
    return min(fits, key=lambda f: f[0])[1]


def _bracket(n, e, target) -> float:
    """Geometric mean of the power-law and the exponential forecasts (session 20 candidate, written
    after seeing digits-1000 seeds 0-11, where the exponential undershot and the power law
    overshot; held out: digits-1000 seeds 12-17 and the procedural curves, run after it)."""
    p = fit_curve(n, e, shapes=("power",)).labels_for(target)
    x = fit_curve(n, e, shapes=("exp",)).labels_for(target)
    if not (np.isfinite(p) and np.isfinite(x) and p > 0 and x > 0):
        return fit_curve(n, e).labels_for(target)
    return float(np.sqrt(p * x))


def _aicc_average(n, e, target, shapes) -> float:
    """Labels to ``target`` averaged (geometric, Akaike weights) over the shapes' fits."""
    fits = [_candidates(n, np.maximum(e, 1e-4), s) for s in shapes]
    aicc = np.array([_aicc(sse, len(n), p) for _, sse, p in fits])
    w = np.exp(-(aicc - aicc.min()) / 2)
    labels = np.array([c.labels_for(target) for c, _, _ in fits])
    if not np.isfinite(labels[w / w.sum() > 0.5]).all():
        return float("inf")
    ok = np.isfinite(labels) & (labels > 0)
    return float(np.exp(np.average(np.log(labels[ok]), weights=w[ok]))) if ok.any() else float("inf")


CANDIDATES = {  # name -> f(n, e, n_test, target) = labels forecast
    "shape by AICc: power, floor, shifted, exp (current)": lambda n, e, N, t: fit_curve(n, e).labels_for(t),
    "power or floor by AICc (session 18)": lambda n, e, N, t: fit_curve(n, e, shapes=OLD).labels_for(t),
    "session 18 on the isotonic envelope": lambda n, e, N, t: fit_curve(n, _isotonic(e), shapes=OLD).labels_for(t),
    "session 18 on the running minimum": lambda n, e, N, t: fit_curve(n, np.minimum.accumulate(e), shapes=OLD).labels_for(t),
    "power law, binomial weights": lambda n, e, N, t: _weighted_power(n, e, N).labels_for(t),
    "power or exp by AICc": lambda n, e, N, t: fit_curve(n, e, shapes=("power", "exp")).labels_for(t),
    "shifted power law only": lambda n, e, N, t: fit_curve(n, e, shapes=("shifted",)).labels_for(t),
    "exponential only": lambda n, e, N, t: fit_curve(n, e, shapes=("exp",)).labels_for(t),
    "Akaike-weighted average of the four shapes": lambda n, e, N, t: _aicc_average(n, e, t, ("power", "floor", "shifted", "exp")),
    "linear least squares (session 17)": lambda n, e, N, t: linear_fit(n, e).labels_for(t),
    "shape by AICc, binomial weights (session 20)": lambda n, e, N, t: _weighted_shapes(n, e, N).labels_for(t),
    "geometric mean of power law and exponential (session 20)": lambda n, e, N, t: _bracket(n, e, t),
}


def checkable(k: int = 6):
    """(name, group, n_test, target, labels, errors of the first k rounds, real crossing)."""
    out = []
    for name, (group, n_test, d) in grouped_curves().items():
        n = np.array(sorted(d), float)
        e = np.array([d[x] for x in sorted(d)])
        if len(n) < k + 1:
            continue
        for t in GROUP_TARGETS.get(group, TARGETS):
            hit = np.flatnonzero(e <= t)
            if len(hit) and hit[0] >= k:
                out.append((name, group, n_test, t, n[:k], e[:k], float(n[hit[0]])))
    return out


# -- session 21 candidates, declared (this block committed) before any of them was evaluated ----------
#
# Rule unchanged: a (curve, target) is checked when the first round at or below the target comes
# after the 6th; within +-15 % of that round's labels; per-group share; MNIST curator@v2 at 5 % must
# stay 3 of 3. Adopted only if no group gets worse than the current fit and the score rises.
#
# (1) bounded fits that know the error starts at chance (``CHANCE``):
#     "sigmoid"  : c + (chance - c) / (1 + (n / n0)^b), with or without the floor c, by AICc;
#     "sigmoid+4": the four current shapes and the two sigmoids, by AICc.
# (2) abstaining forecasts: at round k = 6, 7, ... fit the power law and the exponential on the first k
#     rounds; forecast at the first k where their labels-to-target agree within AGREE = (1 + WITHIN)^2
#     (if the truth lies between them, their geometric mean is then within +-15 %; derived from the
#     tolerance, not tuned); no agreement before the crossing round = no forecast = a miss. Reported
#     forecast: "wait, current" the current fit at that k; "wait, geo" the geometric mean of the two;
#     "wait, sigmoid+4" the "sigmoid+4" fit at that k. Each check also reports the round the forecast
#     was made at and its lead (real crossing / labels at that round).
# (3) fitting on a held-out labelled validation split is not possible offline: the recorded runs keep
#     the test error only.
#
# Held out: digits-1000 seeds >= 18 and procedural seeds >= 5, run after this commit.

AGREE = (1 + WITHIN) ** 2


def _sig4(n, e, chance, t) -> float:
    return fit_curve(n, e, shapes=SHAPES + BOUNDED, chance=chance).labels_for(t)


def _agree_round(n_all, e_all, t, k0, last) -> int | None:
    """The first k in [k0, last] whose power-law and exponential forecasts agree within ``AGREE``."""
    for k in range(k0, last + 1):
        p = fit_curve(n_all[:k], e_all[:k], shapes=("power",)).labels_for(t)
        x = fit_curve(n_all[:k], e_all[:k], shapes=("exp",)).labels_for(t)
        if np.isfinite(p) and np.isfinite(x) and p > 0 and x > 0 and max(p / x, x / p) <= AGREE:
            return k
    return None


def _wait(report):
    def fit(n_all, e_all, k0, last, chance, t):
        k = _agree_round(n_all, e_all, t, k0, last)
        return (None, None) if k is None else (report(n_all[:k], e_all[:k], chance, t), k)
    return fit


NEW_CANDIDATES = {  # name -> f(n_all, e_all, k0, last, chance, target) = (labels forecast or None, rounds fitted)
    "shape by AICc: power, floor, shifted, exp (current)": lambda n, e, k, last, ch, t: (fit_curve(n[:k], e[:k]).labels_for(t), k),
    "sigmoid from chance, floor by AICc": lambda n, e, k, last, ch, t: (
        fit_curve(n[:k], e[:k], shapes=BOUNDED, chance=ch).labels_for(t), k),
    "sigmoid+4: the four shapes and the sigmoids by AICc": lambda n, e, k, last, ch, t: (_sig4(n[:k], e[:k], ch, t), k),
    "wait, current: abstain until power and exp agree, then the current fit": _wait(
        lambda n, e, ch, t: fit_curve(n, e).labels_for(t)),
    "wait, geo: abstain until they agree, then their geometric mean": _wait(
        lambda n, e, ch, t: float(np.sqrt(fit_curve(n, e, shapes=("power",)).labels_for(t)
                                          * fit_curve(n, e, shapes=("exp",)).labels_for(t)))),
    "wait, sigmoid+4: abstain until they agree, then sigmoid+4": _wait(_sig4),
}


# Second declaration (session 21), written after the candidates above were scored on the recorded
# curves (digits-1000 seeds 0-17, procedural 0-4 and the MNIST groups) and before any held-out curve
# (digits-1000 seeds 18-23, procedural seeds 5-7) was scored: the power law never agrees with the
# exponential on near-chance starts (its exponent is near 0 there), so the procedural checks got no
# forecast. Agreement among sets that hold the chance-anchored sigmoid instead:
#     "wait, sig+exp"      : the sigmoid (no floor) and the exponential agree within AGREE;
#     "wait, power+exp+sig": all three agree within AGREE;
# each then reports the geometric mean of the agreeing forecasts.


def _wait_set(shapes):
    def fit(n_all, e_all, k0, last, chance, t):
        for k in range(k0, last + 1):
            ls = np.array([fit_curve(n_all[:k], e_all[:k], shapes=(s,), chance=chance).labels_for(t) for s in shapes])
            if np.isfinite(ls).all() and (ls > 0).all() and ls.max() / ls.min() <= AGREE:
                return float(np.exp(np.log(ls).mean())), k
        return None, None
    return fit


NEW_CANDIDATES["wait, sig+exp: abstain until sigmoid and exp agree, then their geometric mean"] = _wait_set(("sigmoid", "exp"))
NEW_CANDIDATES["wait, power+exp+sig: abstain until all three agree, then their geometric mean"] = _wait_set(("power", "exp", "sigmoid"))


def new_check(k: int = 6, candidates=NEW_CANDIDATES, held_out=None) -> list[dict]:
    """The session-21 candidates under the rule above; ``held_out(name) -> bool`` restricts the curves."""
    checks = []
    for name, (group, n_test, d) in grouped_curves().items():
        if held_out is not None and not held_out(name):
            continue
        n = np.array(sorted(d), float)
        e = np.array([d[x] for x in sorted(d)])
        if len(n) < k + 1:
            continue
        for t in GROUP_TARGETS.get(group, TARGETS):
            hit = np.flatnonzero(e <= t)
            if len(hit) and hit[0] >= k:
                checks.append((name, group, t, n, e, int(hit[0]), CHANCE.get(group, TEN_CLASSES)))
    groups = sorted({c[1] for c in checks})
    rows = []
    for label, fit in candidates.items():
        per, rel, detail = collections.defaultdict(list), [], []
        for name, group, t, n, e, hit, chance in checks:
            real = float(n[hit])
            labels, used = fit(n, e, k, hit, chance, t)
            r = float("inf") if labels is None else labels / real - 1
            per[group].append(bool(abs(r) <= WITHIN))
            rel.append(abs(r))
            detail.append({"curve": name, "target": t, "real": real, "rounds_fitted": used,
                           "labels_at_forecast": None if used is None else float(n[used - 1]),
                           "rel_error": None if labels is None else round(float(r), 3)})
        made = [d for d in detail if d["rounds_fitted"] is not None]
        v2 = [d for d in detail if d["curve"].startswith("mnist-v2 curator@v2 ") and d["target"] == 0.05]
        ok = lambda d: d["rel_error"] is not None and abs(d["rel_error"]) <= WITHIN  # noqa: E731
        rows.append({"fit": label, "score": round(float(np.mean([np.mean(per[g]) for g in groups])), 3),
                     "within": {g: f"{sum(per[g])}/{len(per[g])}" for g in groups},
                     "median_abs_rel_error": round(float(np.median(rel)), 3),
                     "mnist_v2_curator_5pct": f"{sum(map(ok, v2))}/{len(v2)}",
                     "made": f"{len(made)}/{len(detail)}", "within_of_made": f"{sum(map(ok, made))}/{len(made)}",
                     "made_at_6": sum(d["rounds_fitted"] == k for d in made),
                     "median_lead": (round(float(np.median([d["real"] / d["labels_at_forecast"] for d in made])), 2)
                                     if made else None),
                     "checks": detail})
    return rows


def held_out_21(name: str) -> bool:
    """The curves run after both session-21 declarations: digits-1000 seeds >= 18, procedural seeds >= 5."""
    group, _, seed = name.rpartition(" seed ")
    seed = int(seed) if seed.isdigit() else -1
    return (group.startswith("digits-1000-v2") and seed >= 18) or (group.startswith("procedural-v2") and seed >= 5)


def earlier_v2_5pct(candidates=NEW_CANDIDATES, k: int = 6) -> dict[str, str]:
    """MNIST ``curator@v2`` at 5 % on the session-19/20 runs of the three seeds (results_v2_s*_c.jsonl),
    which the loader now replaces by the later run-to-2 % runs of the same seeds (results_v2_s*_c2pct):
    the two runs of a seed part from the third round on, so the constraint is reported on both."""
    out = {}
    for label, fit in candidates.items():
        ok = []
        for path in sorted(LE.glob("results_v2_s*_c.jsonl")):
            for name, (_, _, d) in _label_efficiency([path], "mnist-v2", 10_000).items():
                if "curator@v2" not in name:
                    continue
                n = np.array(sorted(d), float)
                e = np.array([d[x] for x in sorted(d)])
                hit = np.flatnonzero(e <= 0.05)
                if len(hit) and hit[0] >= k:
                    labels, _ = fit(n, e, k, int(hit[0]), TEN_CLASSES, 0.05)
                    ok.append(labels is not None and abs(labels / n[hit[0]] - 1) <= WITHIN)
        out[label] = f"{sum(ok)}/{len(ok)}"
    return out


def session21() -> dict:
    """The session-21 candidates on the recorded curves, on the held-out ones, and on all."""
    out = {"earlier_mnist_v2_5pct": earlier_v2_5pct()}
    for part, sel in (("recorded", lambda nm: not held_out_21(nm)), ("held_out", held_out_21), ("all", None)):
        rows = new_check(held_out=sel)
        out[part] = rows
        print(f"\nSession-21 candidates, {part} curves: share within +-15 % (forecast made before the crossing)")
        groups = list(rows[0]["within"])
        print(f"| fit | score | {' | '.join(groups)} | median miss | MNIST curator@v2 5 % | forecasts made"
              " | within of those made | made at round 6 | median lead |")
        print("|---|---|" + "---|" * len(groups) + "---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['fit']} | {r['score']:.2f} | " + " | ".join(r["within"][g] for g in groups)
                  + f" | {r['median_abs_rel_error']:.0%} | {r['mnist_v2_curator_5pct']} | {r['made']}"
                  + f" | {r['within_of_made']} | {r['made_at_6']} | {r['median_lead']} |")
    print("\nMNIST curator@v2 at 5 % on the earlier runs (results_v2_s*_c.jsonl):", out["earlier_mnist_v2_5pct"])
    for r in out["recorded"]:  # per-check detail is in "all" (and "held_out")
        r.pop("checks")
    (HERE / "forecast_eval_21.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def crossing_check(k: int = 6, candidates=CANDIDATES) -> list[dict]:
    """The rule of the module docstring, for every candidate fit: per-group share within +-15 %."""
    checks = checkable(k)
    groups = sorted({c[1] for c in checks})
    rows = []
    for label, fit in candidates.items():
        per, rel, detail = collections.defaultdict(list), [], []
        for name, group, n_test, t, n, e, real in checks:
            r = fit(n, e, n_test, t) / real - 1
            per[group].append(bool(abs(r) <= WITHIN))
            rel.append(abs(r))
            detail.append({"curve": name, "target": t, "real": real, "rel_error": round(float(r), 3)})
        v2 = [d for d in detail if d["curve"].startswith("mnist-v2 curator@v2 ") and d["target"] == 0.05]
        rows.append({"fit_points": k, "fit": label, "score": round(float(np.mean([np.mean(per[g]) for g in groups])), 3),
                     "within": {g: f"{sum(per[g])}/{len(per[g])}" for g in groups},
                     "median_abs_rel_error": round(float(np.median(rel)), 3),
                     "mnist_v2_curator_5pct": f"{sum(abs(d['rel_error']) <= WITHIN for d in v2)}/{len(v2)}",
                     "checks": detail})
    return rows


def shape_spread(k: int = 6) -> dict:
    """Does the disagreement between the power-law and the exponential forecasts (|log ratio|)
    tell which forecasts of the current fit miss? Spearman rank correlation with |forecast /
    real - 1| per group, and the share within +-15 % below / above the median spread (session 20
    diagnostic, not used by the fit)."""
    rows = []
    for name, group, n_test, t, n, e, real in checkable(k):
        p = fit_curve(n, e, shapes=("power",)).labels_for(t)
        x = fit_curve(n, e, shapes=("exp",)).labels_for(t)
        if np.isfinite(p) and np.isfinite(x) and p > 0 and x > 0:
            rows.append((group, abs(float(np.log(p / x))), abs(fit_curve(n, e).labels_for(t) / real - 1)))
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    out = {}
    for group in ["all"] + sorted({r[0] for r in rows}):
        sel = [r for r in rows if group in ("all", r[0])]
        if len(sel) < 5:
            continue
        spread, miss = np.array([r[1] for r in sel]), np.array([r[2] for r in sel])
        low = spread <= np.median(spread)
        out[group] = {"checks": len(sel), "spearman": round(float(np.corrcoef(rank(spread), rank(miss))[0, 1]), 2),
                      "median_spread_ratio": round(float(np.exp(np.median(spread))), 2),
                      "within_below_median": f"{int((miss[low] <= WITHIN).sum())}/{int(low.sum())}",
                      "within_above_median": f"{int((miss[~low] <= WITHIN).sum())}/{int((~low).sum())}"}
    return out


def band_coverage(k: int = 6, n_boot: int = 100) -> dict:
    """Share of real crossings inside the forecast's 80 % band, without and with ``n_test``."""
    out = {}
    for label, kw in (("points resampled", {}), ("points resampled + binomial test noise", {"use_n_test": True})):
        inside = collections.defaultdict(list)
        for name, group, n_test, t, n, e, real in checkable(k):
            f = forecast(n, e, t, n_boot=n_boot, n_test=n_test if kw else None)
            inside[group].append(bool(f.low <= real <= f.high))
        out[label] = {g: f"{sum(v)}/{len(v)}" for g, v in sorted(inside.items())}
    return out


def value_check() -> list[dict]:
    """Mean |forecast - actual| error at the later points, up to twice the last fitted labels."""
    fits = {"shape by AICc (current)": fit_curve,
            "power or floor by AICc (session 18)": lambda n, e: fit_curve(n, e, shapes=OLD),
            "linear least squares (session 17)": linear_fit}
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
    return table


def _shape(curve: Curve) -> str:
    return curve.kind if curve.kind == "exp" else "shifted" if curve.shift else "floor" if curve.c else "power"


def crossing_table(group: str, k: int = 6) -> list[str]:
    """Markdown rows: every checkable (curve, target) of ``group``, the real crossing, the current
    fit's forecast (shape) and the session-18 fit's, each as forecast / real - 1."""
    rows = collections.defaultdict(dict)
    for name, g, n_test, t, n, e, real in checkable(k):
        if g != group:
            continue
        cur, old = fit_curve(n, e), fit_curve(n, e, shapes=OLD)
        cell = lambda c: f"{c.labels_for(t):,.0f} ({_shape(c)}) {c.labels_for(t) / real - 1:+.0%}"  # noqa: E731
        rows[name][t] = f"{real:.0f} | {cell(cur)} | {cell(old)}"
    targets = [t for t in GROUP_TARGETS.get(group, TARGETS) if any(t in cells for cells in rows.values())]
    out = [f"| run | {' | '.join(f'{t:.0%}: real | forecast (shape) | session 18' for t in targets)} |",
           "|---|" + "---|---|---|" * len(targets)]
    for name, cells in rows.items():
        out.append(f"| {name.removeprefix(group + ' ')} | " + " | ".join(cells.get(t, "- | - | -") for t in targets) + " |")
    return out


def main() -> None:
    table = value_check()
    print("| points fitted | fit | curves | mean abs. error | median abs. error |")
    print("|---|---|---|---|---|")
    for r in table:
        print(f"| {r['fit_points']} | {r['fit']} | {r['curves']} | {r['mean_abs_error']:.4f} | {r['median_abs_error']:.4f} |")
    crossing = {k: crossing_check(k) for k in (5, 6, 8, 10)}
    groups = list(crossing[6][0]["within"])
    print("\nLabels to 10/5/3/2 % error, forecast from the first 6 rounds: share within +-15 % of the real crossing")
    print(f"| fit | score | {' | '.join(groups)} | median miss | MNIST curator@v2 at 5 % |")
    print("|---|---|" + "---|" * len(groups) + "---|---|")
    for r in sorted(crossing[6], key=lambda r: (-r["score"], r["median_abs_rel_error"])):
        cells = " | ".join(r["within"][g] for g in groups)
        print(f"| {r['fit']} | {r['score']:.2f} | {cells} | {r['median_abs_rel_error']:.0%} | {r['mnist_v2_curator_5pct']} |")
    print("\nScore (and median miss) by the number of rounds fitted")
    print("| fit | " + " | ".join(f"{k} rounds" for k in crossing) + " |")
    print("|---|" + "---|" * len(crossing))
    for i, r in enumerate(crossing[6]):
        print(f"| {r['fit']} | " + " | ".join(f"{crossing[k][i]['score']:.2f} ({crossing[k][i]['median_abs_rel_error']:.0%})"
                                              for k in crossing) + " |")
    for group in ("digits-1000-v2", "procedural-v2"):
        print(f"\nCrossings of {group}, forecast from the first {6} rounds")
        print("\n".join(crossing_table(group)))
    spread = shape_spread()
    print("\nPower-law vs exponential forecast spread against the current fit's miss (6 rounds)")
    for g, v in spread.items():
        print(f"- {g}: {v}")
    coverage = band_coverage()
    print("\n80 % band of the current fit: real crossings inside it, per group")
    for label, v in coverage.items():
        print(f"- {label}: {v}")
    for k, rows in crossing.items():  # per-check detail only where it is read: the two fits at 6 rounds
        for r in rows:
            if k != 6 or not r["fit"].endswith(("(current)", "(session 18)")):
                r.pop("checks")
    out = {"value_check": table, "crossing_check": {str(k): v for k, v in crossing.items()}, "band_coverage": coverage, "shape_spread": spread}
    (HERE / "forecast_eval.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    import sys

    session21() if "--session21" in sys.argv else main()
