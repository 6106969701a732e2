"""The README's main job: a demo of the whole loop on the bundled sample data."""

from __future__ import annotations

import os
import sys

import click

from curator.cli import dataset_option, settings_from
from curator.cli.loop import config_from, loop_options, print_result

from curator._resources import path as _resource_path

#: datasets/mnist1989 of a checkout, or its copy inside an installed wheel (any cwd).
SAMPLE = _resource_path("mnist1989")


def labelstudio_ready(settings) -> bool:
    """A Label Studio server is configured (token set) and answers."""
    if not settings.labelstudio_token:
        return False
    from curator.integrations.labelstudio.server import health

    return health(settings.labelstudio_url)


@click.command()
@dataset_option("--dataset", required=False, default="mnist1989", show_default=True, help="Name of the demo dataset.")
@click.option("--start-labelstudio", is_flag=True,
              help="Start the local Label Studio server first (needs CURATOR_LABELSTUDIO_TOKEN).")
@loop_options
@click.pass_context
def demo(ctx, dataset, start_labelstudio, **kw):
    """Ingest the bundled MNIST-1989 sample (16x16 digits) and run a few rounds of the loop.

    Uses the embedded defaults (SQLite in the workspace, the built-in CNN). Labels
    come from a Label Studio server when one is configured and running (the oracle
    stand-in answers there), else from the oracle labeler directly.
    """
    from curator.ingest import ingest_idx
    from curator.loop import run_loop
    from curator.settings import mask_url

    from curator.rounds import policy_from

    settings = settings_from(ctx)
    config_from(dataset, **kw).check()
    policy_from(kw["policy"])  # bad loop arguments are refused before the sample is ingested
    for split in ("train", "test"):
        report = ingest_idx(SAMPLE / f"{split}-images-idx3-ubyte.gz", SAMPLE / f"{split}-labels-idx1-ubyte.gz",
                            dataset=dataset, split=split, settings=settings)
        click.echo(f"ingest {split}: {report.added} added, {report.existing} already present")
    if start_labelstudio:
        from curator.integrations.labelstudio.server import start

        start(settings, echo=click.echo)
    if ctx.get_parameter_source("baseline").name == "DEFAULT":
        kw["baseline"] = True  # the sample has ground truth: show what random selection would reach
    if ctx.get_parameter_source("labeler").name == "DEFAULT" and labelstudio_ready(settings):
        kw["labeler"] = "labelstudio-oracle"
    click.echo(f"loop: {kw['rounds']} rounds of {kw['budget']} with policy {kw['policy']!r}, labeler {kw['labeler']}, "
               f"database {mask_url(settings.database_url)}")
    result = run_loop(settings, config_from(dataset, **kw))
    print_result(settings, result, dataset, kw["target_error"])
    click.echo("")
    click.echo("next:")
    if sys.prefix != sys.base_prefix and os.environ.get("VIRTUAL_ENV") != sys.prefix:
        click.echo(f"  (in this shell first: source {os.path.relpath(sys.prefix)}/bin/activate)")
    click.echo(f"  review in FiftyOne:  curator fiftyone sync --dataset {dataset} && curator fiftyone app --dataset {dataset}")
    if kw["labeler"] == "oracle":
        click.echo("  label in a browser:  export CURATOR_LABELSTUDIO_TOKEN=<a token>; curator labelstudio up; "
                   f"curator loop --dataset {dataset} --rounds {kw['rounds'] + 1} --labeler labelstudio")
    else:
        click.echo(f"  Label Studio queue:  {settings.labelstudio_url} (project curator-{dataset})")
