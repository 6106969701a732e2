"""The loop's report: a Markdown page with plots, rewritten after every round.

Plots people would rather see than read: test error against labels (with the
learning-curve forecast and an optional random baseline), class balance of
each batch, duplicates removed, and the scores of the selected samples.

Without a ground-truth test split the curve's points are validation estimates on
held-out human labels (``curator.loop.curve_metric``); the report says which
estimate each point is and how it was made.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from curator.forecast import forecast
from curator.steps import run_step
from curator.store import rounds as store_rounds
from curator.store import samples as store_samples
from curator.store.queries import agreed_labels, dataset_id


@dataclasses.dataclass
class RoundFacts:
    number: int
    policy: str
    status: str
    budget: int
    selected: int
    duplicates_removed: int
    classes: dict[str, int]
    scores: list[float]


def _read(s, dataset: str):
    """READ: the dataset's evaluations, rounds, round items, the ground truth of those items and the
    human labels (the class balance of a pool without ground truth)."""
    ds = dataset_id(s, dataset)
    numbers, items = store_rounds.all_items(s, ds)
    truth = store_samples.truth(s, sample_ids=items.sample_id)
    human = {int(k): v[0] for k, v in agreed_labels(s, ds).items()}
    return store_rounds.evaluations(s, ds), store_rounds.list_rounds(s, ds), numbers, items, truth, human


def _facts(evals, rounds, numbers, items, truth, human=None) -> tuple[list[dict], list[RoundFacts]]:
    """COMPUTE: the report's plain data from what ``_read`` read."""
    label_of = {**(human or {}), **{k: v for k, v in zip(truth.ids.tolist(), truth.labels) if v is not None}}
    out = [{"n_labels": p.n_labels, "metric": p.metric, "value": p.value, "round": p.number} for p in evals]
    facts = []
    for rnd in rounds:
        mine = numbers == rnd.number
        labels = [label_of.get(int(i)) for i in items.sample_id[mine].tolist()]
        scores = items.score[mine]
        params = rnd.params or {}
        facts.append(RoundFacts(
            number=rnd.number, policy=rnd.policy, status=rnd.status, budget=rnd.budget, selected=int(mine.sum()),
            duplicates_removed=int(params.get("duplicates_removed", 0)),
            classes=dict(Counter(label or "?" for label in labels)),
            scores=[float(x) for x in scores.tolist() if np.isfinite(x)],
        ))
    return out, facts


def collect(settings, dataset: str) -> tuple[list[dict], list[RoundFacts]]:
    """Evaluations (learning-curve points, each with the number of the round it was recorded
    under, in round order) and per-round facts of ``dataset``, as plain data."""
    return run_step(settings, lambda s: _read(s, dataset), lambda got: _facts(*got))


def _curve(evals) -> list[dict]:
    from curator.loop import CURVE_METRICS

    return [e for e in evals if e["metric"] in CURVE_METRICS]


def _validated(errs) -> bool:
    """Whether any point of the curve is a validation estimate (no ground-truth test split)."""
    from curator.loop import TEST_METRIC

    return any(e["metric"] != TEST_METRIC for e in errs)


def _plot_curve(ax, evals, baseline, target):
    errs = _curve(evals)
    if errs:
        n = np.array([e["n_labels"] for e in errs], float)
        y = np.array([e["value"] for e in errs], float)
        ax.plot(n, y, "o-", label="curator loop" + (" (validation estimate)" if _validated(errs) else ""))
        if len(n) >= 3 and target:
            f = forecast(n, y, target)
            grid = np.linspace(n.min(), max(n.max() * 2, min(f.labels_needed, n.max() * 4)
                                            if np.isfinite(f.labels_needed) else n.max() * 2), 100)
            ax.plot(grid, f.curve(grid), "--", color="gray", label="learning-curve fit")
            ax.axhline(target, color="red", lw=0.8, ls=":", label=f"target {target:.2f}")
    if baseline:
        ax.plot(baseline["n_labels"], baseline["error"], "s-", alpha=0.7, label="random baseline")
    from curator.loop import SUPERVISED_METRIC

    sup = [e for e in evals if e["metric"] == SUPERVISED_METRIC]
    if sup:
        ax.plot([e["n_labels"] for e in sup], [e["value"] for e in sup], "^-", alpha=0.7,
                label="labels only (--supervised-only)")
    ax.set_xlabel("labels")
    ax.set_ylabel("validation error (human labels)" if _validated(errs) else "test error")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()


def _plot(path: Path, evals, facts, baseline, target) -> None:
    """The four plots of the report, as one PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    _plot_curve(axes[0, 0], evals, baseline, target)
    axes[0, 0].set_title(("validation" if _validated(_curve(evals)) else "test") + " error vs labels")
    classes = sorted({c for f in facts for c in f.classes}, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    bottom = np.zeros(len(facts))
    for c in classes:
        counts = np.array([f.classes.get(c, 0) for f in facts], float)
        axes[0, 1].bar([f.number for f in facts], counts, bottom=bottom, label=c)
        bottom += counts
    axes[0, 1].set_title("class balance of each batch (ground truth, else human labels)")
    axes[0, 1].set_xlabel("round")
    if classes:
        axes[0, 1].legend(ncol=2, fontsize=7)
    axes[1, 0].bar([f.number for f in facts], [f.duplicates_removed for f in facts], color="tab:orange")
    axes[1, 0].set_title("near copies removed before selection (cold-start embedding)")
    axes[1, 0].set_xlabel("round")
    data = [f.scores for f in facts if f.scores]
    if data:
        axes[1, 1].boxplot(data, tick_labels=[f.number for f in facts if f.scores])
    axes[1, 1].set_title("scores of the selected samples")
    axes[1, 1].set_xlabel("round")
    for ax in (axes[0, 1], axes[1, 0]):
        ax.set_xticks([f.number for f in facts])
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.06, top=0.96, hspace=0.25, wspace=0.15)  # tight_layout: a 2nd draw
    _replace(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def write_report(settings, dataset: str, out_dir: Path | None = None, *, target: float | None = 0.05,
                 baseline: dict | None = None, plots: bool = True) -> Path:
    """Write ``report.md`` and (``plots``) its plots for ``dataset``; return the Markdown path.

    Without plots the Markdown (every table) is the same and nothing is rendered: most of
    the report's cost is matplotlib's, which tests of the loop's bookkeeping can spare.
    """
    from curator.loop import BASELINE_METRIC, SUPERVISED_METRIC
    from curator.names import dataset_name, inside

    dataset = dataset_name(dataset)
    evals, facts = collect(settings, dataset)  # an unknown dataset is refused before a folder is made
    out_dir = Path(out_dir) if out_dir else inside(settings.workspace, "reports", dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    random = {e["n_labels"]: e["value"] for e in evals if e["metric"] == BASELINE_METRIC}
    random_of_round = {e["round"]: e["value"] for e in evals if e["metric"] == BASELINE_METRIC
                       and e["round"] is not None}
    labels_only = {e["round"]: e["value"] for e in evals if e["metric"] == SUPERVISED_METRIC and e["round"] is not None}
    if baseline is None and random:  # recorded by `curator loop --baseline`
        baseline = {"n_labels": sorted(random), "error": [random[n] for n in sorted(random)]}
    if plots:
        _plot(out_dir / "report.png", evals, facts, baseline, target)

    lines = [f"# curator report: {dataset}", ""] + (["![plots](report.png)", ""] if plots else [])
    errs = _curve(evals)
    if errs and _validated(errs):
        from curator.loop import ESTIMATES

        lines += ["| round | labels | validation error | estimate |", "|---|---|---|---|"]
        lines += [f"| {_round_cell(e)} | {e['n_labels']} | {e['value']:.4f} | {e['metric']} |" for e in errs]
        lines += ["", "## How the curve is measured", "",
                  "No ground-truth test split: each point is a validation estimate on the human labels "
                  "(labels: every human label as of the round).", ""]
        lines += [f"- `{m}`: {ESTIMATES[m]}." for m in dict.fromkeys(e["metric"] for e in errs)]
        lines.append("")
    elif errs and (random or labels_only):
        head = ["random selection"] * bool(random) + ["labels only (`--supervised-only`)"] * bool(labels_only)
        lines += ["| round | labels | test error | " + " | ".join(head) + " |", "|---" * (3 + len(head)) + "|"]
        lines += ["| " + " | ".join([_round_cell(e), str(e["n_labels"]), f"{e['value']:.4f}"]
                                    + [_random_cell(e, random_of_round, random)] * bool(random)
                                    + [_random_cell(e, labels_only, {})] * bool(labels_only)) + " |" for e in errs]
        lines.append("")
        if labels_only:
            lines += [_gain_line(errs, labels_only), ""]
    elif errs:
        lines += ["| round | labels | test error |", "|---|---|---|"]
        lines += [f"| {_round_cell(e)} | {e['n_labels']} | {e['value']:.4f} |" for e in errs]
        lines.append("")
    if len(errs) >= 3 and target:
        f = forecast([e["n_labels"] for e in errs], [e["value"] for e in errs], target)
        lines += ["## Forecast", "", f"Fit: error = {f.curve.formula()}"
                  + (" (on the validation estimates)." if _validated(errs) else "."),
                  "", f"{f.summary()}.", ""]
    training = _training_line(settings, dataset)
    if training:
        lines += ["## Training", "", training, ""]
    if facts:
        lines += ["## Rounds", "", "| round | policy | status | selected | duplicates removed | classes |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {f.number} | {f.policy} | {f.status} | {f.selected}/{f.budget} | {f.duplicates_removed} | "
                  f"{json.dumps(f.classes, sort_keys=True)} |" for f in facts]
    lines += agreement_lines(agreement_of(settings, dataset))
    path = out_dir / "report.md"
    _replace(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    return path


def _training_line(settings, dataset: str) -> str | None:
    """How the newest built-in model of ``dataset`` was trained (its recorded params), or None."""
    from curator.store import models as store_models

    def read(s):  # the model of the curve's newest point (not a baseline's), else the newest trained
        from curator.loop import CURVE_METRICS

        points = [p for p in store_rounds.evaluations(s, dataset_id(s, dataset))
                  if p.metric in CURVE_METRICS and p.model_id is not None]
        if points:
            newest = max(points, key=lambda p: (p.number is not None, p.number or 0, p.n_labels, p.id))
            m = store_models.find(s, int(newest.model_id))
            if m is not None and m.path is not None and (m.params or {}).get("dataset") == dataset:
                return m
        return store_models.newest_trained_on(s, dataset)

    model = run_step(settings, read)
    p = (model.params or {}) if model is not None else {}
    if model is None or p.get("trained_by") == "fit hook":
        return None
    if p.get("semi_supervised"):
        return (f"Semi-supervised (model {model.id}, {p.get('n_labels')} labels): the built-in CNN trained on the "
                f"labels and {p.get('semi_pseudo_labels', 0)} confident pseudo-labels of {p.get('semi_pool', 0)} "
                f"unlabeled pool samples (label propagation over the kNN graph of the {p.get('semi_embedding')} "
                "embedding, curator.semihead); `--supervised-only` trains on the labels alone.")
    return (f"Supervised only (model {model.id}, {p.get('n_labels')} labels): the built-in CNN trained on the "
            "labels alone (`--supervised-only`).")


def _gain_line(errs: list[dict], labels_only: dict) -> str:
    """One sentence: the test error with the pool's pseudo-labels against the labels alone, last shared round."""
    both = [e for e in errs if e["round"] in labels_only]
    if not both:
        return ""
    e = both[-1]
    sup = labels_only[e["round"]]
    gain = (sup - e["value"]) * 100
    return (f"Learning from the unlabeled pool (semi-supervised, the default): {e['value']:.2%} test error at "
            f"{e['n_labels']} labels, against {sup:.2%} from the same labels alone "
            f"({'lower' if gain >= 0 else 'higher'} by {abs(gain):.1f} points).")


def _round_cell(e: dict) -> str:
    return str(e["round"]) if e["round"] is not None else "-"


def _random_cell(e: dict, of_round: dict, of_count: dict) -> str:
    """The baseline point of the row's round (of its label count, for points recorded by an older curator)."""
    value = of_round.get(e["round"], of_count.get(e["n_labels"]))
    return "-" if value is None else format(value, ".4f")


def _replace(path: Path, write) -> None:
    """Write ``path`` under a temporary name and rename it: a run killed while writing leaves
    the previous report whole (the next run rewrites it), never half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def agreement_of(settings, dataset: str) -> dict:
    """Agreement between labelers on the dataset's samples answered twice or more, every project
    together (``curator.integrations.labelstudio.agreement.report``, the figures of ``pull --json``)."""
    from curator.integrations.labelstudio.agreement import report
    from curator.store.annotations import answers_of_dataset

    return run_step(settings, lambda s: answers_of_dataset(s, dataset_id(s, dataset)), report)


def _num(x) -> str:
    return "-" if x is None else format(x, ".3f")


def agreement_lines(agr: dict) -> list[str]:
    """The report's agreement section; nothing when no sample has two answers (overlap 1)."""
    if not agr.get("items"):
        return []
    lines = ["", "## Agreement between labelers", "",
             f"{agr['items']} samples answered by 2+ of {agr['labelers']} labelers: Fleiss' kappa "
             f"{_num(agr['fleiss_kappa'])}, Krippendorff's alpha {_num(agr['krippendorff_alpha'])}"
             + (f", Cohen's kappa {_num(agr['cohen_kappa'])}" if agr.get("cohen_kappa") is not None else "")
             + " (1 = perfect, 0 = chance; '-' = undefined).", "",
             "| class | answers | kappa |", "|---|---|---|"]
    lines += [f"| {c} | {v['answers']} | {_num(v['kappa'])} |" for c, v in agr["per_class"].items()]
    lines += ["", "| labeler | shared samples | agreement with the others | mean Cohen's kappa |", "|---|---|---|---|"]
    lines += [f"| {who} | {v['items']} | {_num(v['agreement'])} | {_num(v['mean_cohen_kappa'])} |"
              for who, v in agr["per_labeler"].items()]
    return lines
