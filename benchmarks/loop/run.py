"""A 10-round run of `curator loop` on MNIST, and a check of the learning-curve forecast.

Ingests the 60,000 MNIST training images (the pool) and the 10,000 test images
into a fresh workspace, runs the loop with the oracle labeler (the default
`curator` policy, the built-in CNN), then fits the forecast on the first
rounds only and compares its predictions with what the later rounds reached.
Results are appended to results.jsonl as each step finishes, so a stopped run
keeps what it measured; running again resumes the loop where it stopped.

    python benchmarks/loop/run.py [--workspace DIR] [--rounds 10] [--budget 30] [--fit-rounds 6]
    python benchmarks/loop/run.py --forecast-only    # refit on the recorded curve (after a change to the fit)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MNIST = HERE.parents[1].parent / "shared" / "datasets" / "mnist"


def append(record: dict) -> None:
    with open(HERE / "results.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", default="/tmp/curator-loop-bench")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--fit-rounds", type=int, default=6, help="points used to fit the forecast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--forecast-only", action="store_true",
                    help="refit the forecast on the learning curve already in results.jsonl")
    args = ap.parse_args()
    os.environ.setdefault("CURATOR_PROGRESS", "0")
    if args.forecast_only:
        loops = [r for r in map(json.loads, open(HERE / "results.jsonl")) if r["step"] == "loop"]
        check_forecast(loops[-1]["errors"], args.fit_rounds)
        return

    from curator.ingest import ingest_idx
    from curator.loop import LoopConfig, run_loop
    from curator.settings import Settings

    settings = Settings(workspace=Path(args.workspace))
    t0 = time.time()
    for split, stem in (("train", "train"), ("test", "t10k")):
        ingest_idx(MNIST / f"{stem}-images-idx3-ubyte.gz", MNIST / f"{stem}-labels-idx1-ubyte.gz",
                   dataset="mnist", split=split, settings=settings)
    append({"step": "ingest", "seconds": round(time.time() - t0, 1), "machine": platform.machine(),
            "cpus": os.cpu_count(), "loadavg": open("/proc/loadavg").read().split()[:3]})
    cfg = LoopConfig(dataset="mnist", rounds=args.rounds, budget=args.budget, seed=args.seed)
    t0 = time.time()
    result = run_loop(settings, cfg)
    append({"step": "loop", "seconds": round(time.time() - t0, 1), "errors": result.errors,
            "loadavg": open("/proc/loadavg").read().split()[:3]})

    check_forecast(result.errors, args.fit_rounds)


def check_forecast(errors, k: int) -> None:
    """Fit the forecast on the first ``k`` points, compare with the later ones, plot."""
    from curator.forecast import forecast

    n, e = zip(*errors)
    fc = forecast(n[:k], e[:k], target=0.05)
    checks = [{"labels": int(ni), "actual": round(ei, 4), "predicted": round(float(fc.curve(ni)), 4),
               "abs_error": round(abs(float(fc.curve(ni)) - ei), 4)} for ni, ei in zip(n[k:], e[k:])]
    targets = []
    for t in (0.05, 0.04, 0.03):  # labels to reach t: forecast (with its band) against the first real crossing
        ft = forecast(n[:k], e[:k], target=t)
        actual = next((int(ni) for ni, ei in zip(n, e) if ei <= t), None)
        targets.append({"target": t, "forecast": round(ft.labels_needed, 1), "band": [round(ft.low, 1), round(ft.high, 1)],
                        "actual_first": actual})
    append({"step": "forecast", "fit_on": [int(x) for x in n[:k]], "targets": targets,
            "curve": {"a": fc.curve.a, "b": fc.curve.b, "c": fc.curve.c, "shift": fc.curve.shift, "kind": fc.curve.kind},
            "summary": fc.summary(), "checks": checks,
            "mean_abs_error": round(sum(c["abs_error"] for c in checks) / max(len(checks), 1), 4)})
    plot(n, e, k, fc)
    print(json.dumps(checks, indent=1))


def plot(n, e, k, fc) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(n[:k], e[:k], "o", color="tab:blue", label=f"rounds used for the fit ({k})")
    ax.plot(n[k:], e[k:], "o", color="tab:green", label="later rounds (held out)")
    grid = np.linspace(min(n), max(n) * 1.2, 200)
    ax.plot(grid, fc.curve(grid), "--", color="gray",
            label=f"forecast: {fc.curve.formula()}")
    ax.set_xlabel("labels")
    ax.set_ylabel("test error (10,000 MNIST test images)")
    ax.set_title("curator loop on MNIST: learning curve and forecast check")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "forecast_check.png", dpi=100)


if __name__ == "__main__":
    main()
