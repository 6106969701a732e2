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
        click.option("--labeler", type=click.Choice(["oracle", "labelstudio-oracle", "labelstudio"]),
                     default="oracle", show_default=True,
                     help="oracle: ground truth, no server; labelstudio-oracle: the oracle answers in Label "
                          "Studio; labelstudio: wait for people."),
        click.option("--pool-split", default="train", show_default=True),
        click.option("--test-split", default="test", show_default=True),
        click.option("--target-error", default=0.05, show_default=True, type=_UNIT,
                     help="Error the forecast aims at, in (0, 1)."),
        click.option("--subsample", default=2000, show_default=True, type=click.IntRange(min=0),
                     help="Pool samples scored per round (0: all)."),
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

    kw["subsample"] = kw.get("subsample") or None
    return LoopConfig(dataset=dataset, **kw)


def print_result(settings, result, dataset, target_error: float = 0.05):
    from curator.forecast import forecast

    random = dict(result.baseline)
    for n, err in result.errors:
        click.echo(f"  {n:6d} labels: test error {err:.4f}" + (f"  (random selection {random[n]:.4f})" if n in random else ""))
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
    command again and it continues where it stopped.
    """
    from curator.exceptions import ValidationError
    from curator.loop import run_loop
    from curator.rounds import policy_from
    from curator.steps import run_step
    from curator.store.queries import count_with_truth, dataset_id

    settings = settings_from(ctx)
    cfg = config_from(dataset, **kw)
    cfg.check()
    policy_from(cfg.policy)  # an unknown policy is refused now, not after the seed round is trained
    if not run_step(settings, lambda s: count_with_truth(s, dataset_id(s, dataset), cfg.test_split)):
        raise ValidationError(
            f"dataset {dataset!r} has no samples with ground truth in split {cfg.test_split!r} to measure "
            "the test error on; ingest a test set with its labels or pass --test-split"
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
