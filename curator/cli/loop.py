"""`curator loop` and `curator report`."""

from __future__ import annotations

import click

from curator.cli import connect_executor, dataset_option, executor_options, name_option, settings_from

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


def live_options(f):
    """The flags of the live loop (``--live``): additive to the loop's own."""
    options = [
        click.option("--live", is_flag=True,
                     help="With --labeler labelstudio: keep a short queue ahead of the labelers, receive answers by "
                          "webhook, retrain every --retrain-every answers and re-rank the queue (runs until "
                          "interrupted; docs/labelstudio_live.md)."),
        click.option("--queue", "queue", type=click.IntRange(min=1), default=None,
                     help="With --live: tasks kept ahead of the labelers (default: from their pace: K + answers "
                          "during a retrain + one per labeler, at least 3 per labeler)."),
        click.option("--retrain-every", type=click.IntRange(min=1), default=10, show_default=True,
                     help="With --live: retrain and re-rank after this many new answers (K)."),
        click.option("--port", type=click.IntRange(0, 65535), default=9090, show_default=True,
                     help="With --live: port of the ML backend and webhook receiver (127.0.0.1)."),
        click.option("--callback-url", default=None,
                     help="With --live: how Label Studio reaches that port (default http://127.0.0.1:PORT)."),
        click.option("--until-labels", type=click.IntRange(min=1), default=None,
                     help="With --live: stop once this many samples are labeled and the queue re-ranked."),
        name_option("--project", kind="project", default=None,
                    help="With --live: Label Studio project title (default: curator-<dataset>)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.command()
@dataset_option()
@loop_options
@live_options
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
    live = {k: kw.pop(k) for k in ("live", "queue", "retrain_every", "port", "callback_url", "until_labels", "project")}
    if live["live"]:
        return _run_live(settings, dataset, kw, live)
    given = [f"--{k.replace('_', '-')}" for k, v in live.items() if k not in ("live", "retrain_every", "port")
             and v is not None]
    if given:
        raise ValidationError(f"{', '.join(given)} go(es) with --live; add --live or leave them out")
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


def _run_live(settings, dataset, kw, live) -> None:
    """``--live``: the queue that follows the model, until interrupted (or --until-labels)."""
    from curator.exceptions import ValidationError
    from curator.live import LiveConfig, LiveLoop
    from curator.rounds import policy_from

    if kw["labeler"] != "labelstudio":
        raise ValidationError(f"--live goes with --labeler labelstudio (people answer in Label Studio); "
                              f"got --labeler {kw['labeler']}")
    ignored = [name for name, value in (("--classes", kw["classes"]), ("--baseline", kw["baseline"])) if value]
    if ignored:
        raise ValidationError(f"{', '.join(ignored)} do(es) not apply to --live (the queue has no rounds to "
                              "evaluate); leave it out")
    policy_from(kw["policy"])
    cfg = LiveConfig(dataset=dataset, project=live["project"], queue=live["queue"], retrain_every=live["retrain_every"], policy=kw["policy"],
                     seed=kw["seed"], initial=kw["initial"], pool_split=kw["pool_split"],
                     subsample=kw["subsample"] or None, epochs=kw["epochs"], model=kw["model"], weights=kw["weights"],
                     port=live["port"], callback_url=live["callback_url"], until_labels=live["until_labels"])
    connect_executor(settings)
    runner = LiveLoop(settings, cfg, log=lambda m: click.echo(m, err=True))
    runner.open()
    click.echo(f"live loop: project {runner.project!r}, backend {runner.backend.url}; labelers press Label All "
               f"Tasks, the {'live queue'!r} tab shows their order: {settings.labelstudio_url.rstrip('/')}/projects/"
               f"{runner.external_id}/data?tab={runner.view_id}", err=True)
    try:
        made = runner.run()
    except KeyboardInterrupt:
        runner.close()
        made = runner.generations
    click.echo(f"live loop stopped: {made} re-ranking(s) this run")


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
