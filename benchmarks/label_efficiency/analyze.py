"""Summarise results.jsonl: labels to reach 10% and 5% test error per policy, and the plot.

For each (policy, seed) a finished run is used (or the longest partial one
when none finished; runs are deterministic given the seed, so repeats agree). A run that never reached a threshold counts
as "more than its last number of labels" and the table says so.

    python benchmarks/label_efficiency/analyze.py   # writes summary.json and learning_curves.png
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PAPER = {"bald": (145, 335), "variation_ratio": (120, 295), "random": (255, 835)}  # Gal et al. 2017, Table 1
#: Rows of the second recipe (``@v2``: augmentation, 600 + 200 warm steps, tail weight averaging;
#: results_v2_s*.jsonl) first, then the first recipe's rows for comparison.
V2 = ["curator@v2", "curator:cold_per_class=0@v2", "curator:batch=diverse,cold_per_class=0@v2", "random@v2"]
PLOT = V2 + ["curator", "random"]
ORDER = V2 + ["curator", "bald", "variation_ratio", "entropy", "margin", "kcenter", "badge", "random"]


def load(paths):
    runs = defaultdict(list)  # run id -> lines
    done, key_of = {}, {}
    paths = [paths] if isinstance(paths, Path) else paths
    for line in (ln for p in paths for ln in p.read_text().splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "run" not in rec:
            continue
        key_of[rec["run"]] = (rec["policy"], rec["seed"])
        if rec.get("done"):
            done[rec["run"]] = True
        else:
            runs[rec["run"]].append(rec)
    best = {}
    for run, lines in runs.items():  # a finished run first, else the longest partial one
        key = key_of[run]
        rank = (bool(done.get(run)), len(lines))
        if key not in best or rank > (bool(done.get(best[key][0])), len(best[key][1])):
            best[key] = (run, lines)
    return {k: (sorted(v[1], key=lambda r: r["labels"]), bool(done.get(v[0]))) for k, v in best.items()}


def reach(curve, threshold):
    for r in curve:
        if r["test_error"] <= threshold:
            return r["labels"], False
    return (curve[-1]["labels"] if curve else 0), True  # censored: more than this


def fmt(values):
    vals = [v for v, _ in values]
    cens = sum(c for _, c in values)
    if not vals:
        return "-"
    if cens:
        return f"> {int(np.mean(vals))} ({cens}/{len(vals)} seeds not reached; reached: {sorted(v for v, c in values if not c) or '-'})"
    return f"{np.mean(vals):.0f} ± {np.std(vals):.0f} (min {min(vals)}, max {max(vals)})"


def max_rise(curve) -> float:
    """Largest rise of the test error from one round to the next (0 for a curve that never rises)."""
    e = [r["test_error"] for r in curve]
    return max([0.0] + [b - a for a, b in zip(e, e[1:])])


def forecast_check(data, target: float, fit_points: int = 6):
    """Per run: labels to ``target`` forecast from the first ``fit_points`` rounds vs the real crossing,
    with the current fit (shape by AICc) and the session-18 one (power law or floor) beside it."""
    from curator.forecast import fit_curve

    out = {}
    for key, (curve, _) in sorted(data.items()):
        n = np.array([r["labels"] for r in curve], float)
        e = np.array([r["test_error"] for r in curve])
        real, censored = reach(curve, target)
        if len(n) < fit_points + 1 or censored or real <= n[fit_points - 1]:
            continue  # no crossing after the fitted rounds to check against
        fit = fit_curve(n[:fit_points], e[:fit_points])
        pred = fit.labels_for(target)
        old = fit_curve(n[:fit_points], e[:fit_points], shapes=("power", "floor")).labels_for(target)
        out[f"{key[0]} seed {key[1]}"] = {"real": int(real), "forecast": round(float(pred), 1),
                                          "rel_error": round(float(pred / real - 1), 3), "shape": fit.kind if not fit.shift else "shifted",
                                          "forecast_old": round(float(old), 1), "rel_error_old": round(float(old / real - 1), 3)}
    return out


def report_forecasts(data, targets, name):
    checks = {}
    for t in targets:
        checks[str(t)] = forecast_check(data, t)
        rows = checks[str(t)]
        if not rows:
            continue
        within = sum(abs(r["rel_error"]) <= 0.15 for r in rows.values())
        within_old = sum(abs(r["rel_error_old"]) <= 0.15 for r in rows.values())
        print(f"\n{name}: labels to {t:.0%} error, forecast from the first 6 rounds "
              f"({within}/{len(rows)} within +-15 %; session-18 fit {within_old}/{len(rows)})")
        print("| run | real crossing | forecast (shape) | forecast / real - 1 | session-18 fit | its error |")
        print("|---|---|---|---|---|---|")
        for k, r in rows.items():
            print(f"| {k} | {r['real']} | {r['forecast']:.0f} ({r['shape']}) | {r['rel_error']:+.1%} | "
                  f"{r['forecast_old']:.0f} | {r['rel_error_old']:+.1%} |")
    return checks


def smoothness(data, policies):
    out = {}
    print("\n| policy | max round-to-round rise of test error, per seed | mean |")
    print("|---|---|---|")
    for p in policies:
        rises = [round(max_rise(data[(p, s)][0]), 4) for s in sorted(s for (q, s) in data if q == p)]
        out[p] = rises
        print(f"| {p} | {', '.join(f'{r:.4f}' for r in rises)} | {np.mean(rises):.4f} |")
    return out


def digits():
    paths = sorted(HERE.glob("results_digits*.jsonl"))
    if not paths:
        return {}
    data = load(paths)
    print("\nDigits (scikit-learn, 16x16): labels to 5%, 3% and 2% error")
    print("| policy | seeds | labels to 5% | labels to 3% | labels to 2% |")
    print("|---|---|---|---|---|")
    out = {}
    for p in sorted({k[0] for k in data}):
        seeds = sorted(s for (q, s) in data if q == p)
        r5 = [reach(data[(p, s)][0], 0.05) for s in seeds]
        r3 = [reach(data[(p, s)][0], 0.03) for s in seeds]
        r2 = [reach(data[(p, s)][0], 0.02) for s in seeds]
        out[p] = {"seeds": seeds, "labels_to_5": r5, "labels_to_3": r3, "labels_to_2": r2}
        print(f"| {p} | {len(seeds)} | {fmt(r5)} | {fmt(r3)} | {fmt(r2)} |")
    out["smoothness"] = smoothness(data, sorted({k[0] for k in data}))
    out["forecast"] = report_forecasts(data, (0.05, 0.03, 0.02), "digits")
    return out


def main():
    data = load([HERE / "results.jsonl", *sorted(HERE.glob("results_v2*.jsonl"))])
    policies = [p for p in ORDER if any(k[0] == p for k in data)] + sorted(
        {k[0] for k in data} - set(ORDER))
    summary = {}
    for p in policies:
        seeds = sorted(s for (q, s) in data if q == p)
        r10 = [reach(data[(p, s)][0], 0.10) for s in seeds]
        r5 = [reach(data[(p, s)][0], 0.05) for s in seeds]
        summary[p] = {
            "seeds": seeds,
            "finished": [data[(p, s)][1] for s in seeds],
            "labels_to_10": r10,
            "labels_to_5": r5,
            "table_10": fmt(r10),
            "table_5": fmt(r5),
            "paper": PAPER.get(p),
        }
    summary["_smoothness"] = {}
    summary["_forecast"] = {}
    print("| policy | seeds | labels to 10% error | labels to 5% error | paper (10% / 5%) |")
    print("|---|---|---|---|---|")
    for p, s in summary.items():
        if p.startswith("_"):
            continue
        paper = f"{s['paper'][0]} / {s['paper'][1]}" if s["paper"] else "-"
        print(f"| {p} | {len(s['seeds'])} | {s['table_10']} | {s['table_5']} | {paper} |")
    # paired comparison on the seeds both ran: curator vs random at 5%
    for cur, rnd in (("curator", "random"), ("curator@v2", "random@v2")):
        if cur not in summary or rnd not in summary:
            continue
        for s in sorted(set(summary[cur]["seeds"]) & set(summary[rnd]["seeds"])):
            c = reach(data[(cur, s)][0], 0.05)
            r = reach(data[(rnd, s)][0], 0.05)
            print(f"seed {s}: {cur} {c[0]}{'+' if c[1] else ''} vs {rnd} {'>' if r[1] else ''}{r[0]} labels to 5%")
    summary["_smoothness"] = smoothness(data, policies)
    summary["_forecast"] = report_forecasts(data, (0.05,), "MNIST")
    summary["_digits"] = digits()
    (HERE / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(data, [p for p in PLOT if any(k[0] == p for k in data)])


def plot(data, policies):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for p in policies:
        curves = [data[k][0] for k in data if k[0] == p]
        grid = sorted({r["labels"] for c in curves for r in c})
        mean, lo, hi, xs = [], [], [], []
        for n in grid:
            vals = [r["test_error"] for c in curves for r in c if r["labels"] == n]
            if len(vals) < max(1, len(curves) // 2 + (len(curves) > 1)):
                continue  # only where most seeds have a value
            xs.append(n)
            mean.append(np.mean(vals))
            lo.append(min(vals))
            hi.append(max(vals))
        style = dict(lw=2.5, color="black", ls="--") if p.startswith("random") else dict(lw=1.8)
        if "@" not in p:  # the first recipe: thin, for comparison
            style.update(lw=1.0, alpha=0.6, color="grey" if p == "random" else "tab:brown")
        line, = ax.plot(xs, mean, label=f"{p} ({len(curves)} seeds)", **style)
        if "@" in p:
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
    for t in (0.10, 0.05):
        ax.axhline(t, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_yticks([0.03, 0.05, 0.1, 0.2, 0.4])
    ax.set_yticklabels(["3%", "5%", "10%", "20%", "40%"])
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("labeled images")
    ax.set_ylabel("test error (10,000 MNIST test images)")
    ax.set_title("Label efficiency on MNIST (Gal et al. 2017 protocol): mean, min-max band over seeds")
    ax.title.set_fontsize(10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "learning_curves.png", dpi=120)


if __name__ == "__main__":
    main()
