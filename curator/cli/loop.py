"""`curator loop` and `curator report`."""

from __future__ import annotations

import click

from curator.cli import connect_executor, dataset_option, executor_options, settings_from

_UNIT = click.FloatRange(0, 1, min_open=True, max_open=True)


def loop_options(f):
    options = [
        click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=0),
                     help="Rounds after the seed round."),
        click.option("--budget", default=10, show_default=True, type=click.IntRange(min=1),
                     help="Samples selected per round."),
        click.option("--initial", default=20, show_default=True, type=click.IntRange(min=1),
                     help="Size of the seed round (balanced)."),
        click.option("--policy", default="curator", show_default=True, help="Selection policy (curator policies)."),
        click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0)),
        click.option("--labeler", type=click.Choice(["oracle", "answers", "labelstudio-oracle", "labelstudio"]),
                     default="oracle", show_default=True,
                     help="oracle: ground truth, no server; answers: the labels in --answers FILE, no server; "
                          "labelstudio-oracle: the oracle answers in Label Studio; labelstudio: wait for people."),
        click.option("--answers", type=click.Path(dir_okay=False), default=None,
                     help="With --labeler answers: CSV (KEY,LABEL) or JSON {KEY: LABEL}, KEY a sample's URI or "
                          "file name; the loop reads it only to label what it selected."),
        click.option("--classes", "classes", default=None, metavar="a,b,c|@FILE|CONFIG.xml",
                     help="Declare the class list (a pool with no ground truth): comma-separated names, @FILE "
                          "with one per line, or a Label Studio labeling config's Choice values. Stored with "
                          "the dataset; must cover its ground truth where it has some."),
        click.option("--pool-split", default="train", show_default=True),
        click.option("--test-split", default="test", show_default=True,
                     help="Split with ground truth for the test error; when the default split has none, the "
                          "curve is estimated on held-out human labels instead."),
        click.option("--target-error", default=0.05, show_default=True, type=_UNIT,
                     help="Error the forecast aims at, in (0, 1)."),
        click.option("--subsample", default=2000, show_default=True, type=click.IntRange(min=0),
                     help="Pool samples scored per round (0: all)."),
        click.option("--epochs", type=click.IntRange(min=1), default=None,
                     help="Training epochs of each round's model (default: the built-in recipe, 200 to 2,000 "
                          "steps); fewer for a quick run."),
        click.option("--supervised-only", is_flag=True,
                     help="Built-in model: train on the labels only (today's recipe), not also on confident "
                          "pseudo-labels of the unlabeled pool."),
        click.option("--baseline/--no-baseline", default=False, show_default=True,
                     help="Also train on random picks of the same sizes (needs ground truth): the report's "
                          "random-selection baseline."),
        click.option("--model", "-m", help="Model spec (package.module:factory, a TorchScript file, a registered "
                     "name, smallcnn; see docs/models.md). Trained by its fit hook if it has one, else used frozen. "
                     "Default: the built-in CNN and its recipe."),
        click.option("--weights", type=click.Path(dir_okay=False),
                     help="Initial weights (state_dict) for a --model package.module:factory or registered name."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def config_from(dataset, **kw):
    from curator.loop import LoopConfig

    from curator.classlist import parse_classes

    kw["subsample"] = kw.get("subsample") or None
    if kw.get("classes"):
        kw["classes"] = parse_classes(kw["classes"])
    return LoopConfig(dataset=dataset, **kw)


def print_result(settings, result, dataset, target_error: float = 0.05):
    from curator.forecast import forecast
    from curator.loop import ESTIMATES, TEST_METRIC

    random = dict(result.baseline)
    metrics = result.metrics or [TEST_METRIC] * len(result.errors)
    for (n, err), metric in zip(result.errors, metrics):
        what = "test error" if metric == TEST_METRIC else f"{metric.replace('_', ' ')} (validation estimate)"
        click.echo(f"  {n:6d} labels: {what} {err:.4f}" + (f"  (random selection {random[n]:.4f})" if n in random else ""))
    for metric in dict.fromkeys(m for m in metrics if m != TEST_METRIC):
        click.echo(f"{metric}: {ESTIMATES[metric]}")
    if result.waiting:
        click.echo(f"waiting: {result.waiting}")
    if len(result.errors) >= 3:
        n, e = zip(*result.errors)
        click.echo("forecast: " + forecast(n, e, target=target_error).summary())
    click.echo(f"report: {settings.workspace / 'reports' / dataset / 'report.md'}")


@click.command()
@dataset_option()
@loop_options
@executor_options
@click.pass_context
def loop(ctx, dataset, **kw):
    """Run (or resume) rounds of the loop: train, score, de-duplicate, select, label, pull, version, evaluate.

    Every step is recorded in the database; after an interruption, run the same
    command again and it continues where it stopped. A pool with no ground truth
    works too: declare its classes (--classes), label with people (--labeler
    labelstudio) or a file (--labeler answers); round 0 is then chosen by the
    `typical` policy and the curve is estimated on held-out human labels.
    """
    from click.core import ParameterSource

    from curator.exceptions import ValidationError
    from curator.loop import run_loop
    from curator.rounds import policy_from
    from curator.steps import run_step
    from curator.store.queries import count_with_truth, dataset_id

    settings = settings_from(ctx)
    cfg = config_from(dataset, **kw)
    cfg.check()
    policy_from(cfg.policy)  # an unknown policy is refused now, not after the seed round is trained
    # no ground truth in the default test split: the curve is estimated on held-out human labels;
    # a split named on purpose that has none is a mistake (a typo), refused before any work
    named = ctx.get_parameter_source("test_split") != ParameterSource.DEFAULT
    if named and not run_step(settings, lambda s: count_with_truth(s, dataset_id(s, dataset), cfg.test_split)):
        raise ValidationError(
            f"dataset {dataset!r} has no samples with ground truth in split {cfg.test_split!r} to measure "
            "the test error on; ingest a test set with its labels, pass another --test-split, or leave it "
            "out to estimate the curve on held-out human labels"
        )
    connect_executor(settings)
    if cfg.model is not None:
        _say_how_model_learns(settings, cfg)
    elif cfg.weights is not None:
        raise ValidationError("--weights goes with --model SPEC")
    result = run_loop(settings, cfg)
    print_result(settings, result, dataset, kw["target_error"])


def _say_how_model_learns(settings, cfg) -> None:
    """Build the user's model once (a bad spec is one line now, before round 0) and say whether the
    loop trains it (its fit hook) or uses it frozen; refuse a policy that needs MC dropout it lacks."""
    from curator import rounds

    model = rounds.load_model(settings, cfg.model, weights=cfg.weights, dataset=cfg.dataset)
    rounds.mc_samples_for(model, cfg.policy, 20, explicit=False)
    how = rounds.trains(model)
    if how is None:
        click.echo(f"model {model.spec}: no training hook (fit in its module), so the loop uses it frozen: "
                   "scores and embeddings only")
    else:
        click.echo(f"model {model.spec}: trained on each round's labels by its {how}")


@click.command()
@dataset_option()
@click.option("--target-error", default=0.05, show_default=True, type=_UNIT, help="Error the forecast aims at, in (0, 1).")
@click.pass_context
def report(ctx, dataset, target_error):
    """Write the learning-curve report (Markdown + plots) of a dataset."""
    from curator.report import write_report

    path = write_report(settings_from(ctx), dataset, target=target_error)
    click.echo(str(path))
