"""``curator fiftyone``: sync curator state to FiftyOne, import a FiftyOne dataset, serve the App."""

from __future__ import annotations

import json

import click

from curator.cli import dataset_option, name_option, settings_from


@click.group()
def fiftyone():
    """Review curator's state in FiftyOne, or use a FiftyOne dataset as a pool.

    FiftyOne's own settings apply (FIFTYONE_DATABASE_URI, FIFTYONE_DATABASE_DIR,
    ...); usage tracking is off unless FIFTYONE_DO_NOT_TRACK says otherwise.
    """


@fiftyone.command()
@dataset_option(required=False, help="Dataset to sync (default: the only one).")
@click.option("--round", "round_", type=click.IntRange(min=0), help="Sync only the samples selected in this round.")
@name_option("--version", "version", kind="version", help="Sync only the samples of this labeled-set version.")
@name_option("--name", "fo_name", kind="project",
             help="FiftyOne dataset name (default: curator-DATASET[-round-N|-VERSION]).")
@click.option("--similarity/--no-similarity", default=True, show_default=True,
              help="Register stored embeddings as a Brain similarity index.")
@click.option("--visualization", type=click.Choice(["pca", "tsne", "none"]), default="pca", show_default=True,
              help="2-D embedding map computed from the stored embeddings.")
@click.option("--duplicates/--no-duplicates", default=True, show_default=True,
              help="Near-duplicate groups as `curator dedup` finds them (cold-start embedding).")
@click.option("--into", "into", metavar="FO_DATASET",
              help="Write curator's curator_* fields into this FiftyOne dataset of YOURS (matched sample by "
                   "sample) instead of curator's own copy; your fields are never touched.")
@click.option("--match", default="filepath", show_default=True,
              help="With --into: the field of your dataset that holds the file paths curator ingested "
                   "(or curator sample ids).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.pass_context
def sync(ctx, dataset, round_, version, fo_name, similarity, visualization, duplicates, into, match, as_json):
    """Create or update the FiftyOne dataset of a dataset (or of one round or version).

    One FiftyOne sample per curator sample; running it again updates the
    fields in place. Nothing is written unless every input checks out.
    With --into, curator's fields go into your own FiftyOne dataset instead.
    """
    from curator.exceptions import ValidationError
    from curator.integrations.fiftyone.sync import sync as run
    from curator.steps import run_step
    from curator.store.queries import resolve_dataset

    settings = settings_from(ctx)
    dataset = run_step(settings, lambda s: resolve_dataset(s, dataset))[1]
    if into is not None:
        given = [flag for flag, v in (("--round", round_), ("--version", version), ("--name", fo_name)) if v is not None]
        if given:
            raise ValidationError(f"{', '.join(given)} cannot go with --into (it writes the whole dataset's fields "
                                  "into your dataset); drop it")
        from curator.integrations.fiftyone.into import sync_into

        report = sync_into(settings, dataset, into, match=match, duplicates=duplicates)
        if as_json:
            click.echo(json.dumps(report.as_dict()))
            return
        click.echo(f"{report.fo_dataset}: curator fields of {report.matched} samples of {report.dataset!r} "
                   f"(matched by {report.match}; {sum(report.changed.values())} values changed, "
                   f"{report.not_in_curator} of your samples not in curator left as they are)")
        if report.repaired:
            click.echo("the previous write into it was interrupted; this one completed it", err=True)
        for what, why in report.skipped.items():
            click.echo(f"skipped {what}: {why}", err=True)
        return
    report = run(
        settings, dataset, round=round_, version=version, fo_name=fo_name,
        similarity=similarity, visualization=None if visualization == "none" else visualization,
        duplicates=duplicates,
    )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        f"{report.fo_dataset}: {report.samples} samples from {report.scope} ({report.added} added, "
        f"{report.removed} removed) in {report.seconds:.1f} s; views: {', '.join(report.views) or 'none'}"
    )
    if report.repaired:
        click.echo("the previous sync into it was interrupted; this one completed it", err=True)
    for what, why in report.skipped.items():
        click.echo(f"skipped {what}: {why}", err=True)


@fiftyone.command("import")
@click.argument("fo_dataset")
@dataset_option(help="curator dataset to ingest into (created if new).")
@click.option("--label-field", help="Classification field holding ground truth (default: ground_truth if present).")
@click.option("--split", help="Split stored on every sample (default: a train/test/validation tag).")
@click.option("--skip-bad", is_flag=True, help="Skip missing or corrupt files and report them instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.pass_context
def import_(ctx, fo_dataset, dataset, label_field, split, skip_bad, as_json):
    """Ingest the image samples of FiftyOne dataset FO_DATASET as a curator pool."""
    from curator.integrations.fiftyone.source import import_dataset

    report = import_dataset(
        settings_from(ctx), fo_dataset, dataset, label_field=label_field, split=split, skip_bad=skip_bad
    )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        f"{dataset}: {report.added} added, {report.existing} already present, {report.duplicates} exact "
        f"duplicates, {len(report.skipped)} skipped; {report.total} samples in all"
    )
    for item, reason in report.skipped:
        click.echo(f"skipped {item}: {reason}", err=True)


@fiftyone.command("install-plugin")
@click.option("--plugins-dir", type=click.Path(file_okay=False), help="Default: FiftyOne's plugins_dir.")
@click.option("--copy", is_flag=True, help="Copy the files instead of linking to this checkout.")
def install_plugin(plugins_dir, copy):
    """Install curator's App plugin (plugins/fiftyone) into FiftyOne's plugins folder."""
    from curator.integrations.fiftyone.app import install

    target = install(plugins_dir, copy=copy)
    click.echo(f"curator plugin installed at {target}; restart the App to load it")


@fiftyone.command()
@click.argument("fo_dataset", required=False)
@dataset_option(required=False, help="curator dataset whose synced FiftyOne dataset to open.")
@click.option("--port", default=5151, show_default=True, type=click.IntRange(1, 65535))
@click.option("--address", default="127.0.0.1", show_default=True, help="Bind address (127.0.0.1: this machine only).")
def app(fo_dataset, dataset, port, address):
    """Serve the FiftyOne App on ADDRESS:PORT until interrupted."""
    from curator.integrations.fiftyone.app import serve_app

    serve_app(fo_dataset, dataset=dataset, port=port, address=address, echo=click.echo)
