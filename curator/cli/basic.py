"""Foundation commands: config, ingest, datasets, db."""

from __future__ import annotations

import json
from pathlib import Path

import click

from curator.cli import dataset_option, settings_from


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def config(ctx, as_json):
    """Print the effective settings, with secrets masked."""
    values = settings_from(ctx).masked()
    if as_json:
        click.echo(json.dumps(values, indent=2))
    else:
        for key, value in values.items():
            click.echo(f"{key:18} {value}")


def detect_source(path: Path) -> str:
    if path.is_dir():
        return "folder"
    if path.suffix in (".npy", ".npz"):
        return "arrays"
    return "idx"


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@dataset_option(help="Dataset name (created if new): letters, digits, '.', '_', '-'; case does not matter.")
@click.option("--labels", type=click.Path(path_type=Path), help="IDX or NumPy labels file (ground truth).")
@click.option("--split", help="Split of these samples, e.g. train or test.")
@click.option("--skip-bad", is_flag=True,
              help="Skip corrupt, unreadable or too large images (folders) and report them instead of failing.")
@click.option("--no-class-folders", is_flag=True, help="Do not read classes from sub-folder names.")
@click.option("--batch-size", default=1024, show_default=True, help="Images decoded at once (1 or more).")
@click.option("--max-pixels", type=int, default=None,
              help="Largest image (width x height) to decode; default $CURATOR_MAX_PIXELS or 89,478,485 "
                   "(a guard against decompression bombs).")
@click.option("--classes", "classes", default=None, metavar="a,b,c|@FILE|CONFIG.xml",
              help="Declare the class list (a pool with no labels yet): comma-separated names, @FILE with one per "
                   "line, or a Label Studio labeling config's Choice values; ground truth must fit it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.pass_context
def ingest(ctx, path, dataset, labels, split, skip_bad, no_class_folders, batch_size, max_pixels, classes, as_json):
    """Ingest PATH (an image folder, an IDX file, or a .npy/.npz array) into a dataset.

    Every sample is hashed; running it again adds nothing. Nothing is stored
    unless the whole input is read (or bad images are skipped with --skip-bad;
    if every image is bad, nothing is stored and the command fails). PNG files
    made from IDX or NumPy data appear only with their rows: a killed ingest
    leaves neither (see `curator doctor`).
    """
    from curator import ingest as ing
    from curator.classlist import parse_classes
    from curator.exceptions import ValidationError
    from curator.images import max_pixels as pixel_limit
    from curator.ingest._common import check_batch_size

    settings = settings_from(ctx)
    check_batch_size(batch_size)
    limit = pixel_limit(max_pixels)
    declared = parse_classes(classes) if classes else None
    if not path.exists():
        raise ValidationError(f"{path} does not exist; pass an image folder, an IDX file or a .npy/.npz file")
    kind = detect_source(path)
    if labels is not None and kind == "folder":
        raise ValidationError(
            f"--labels {labels}: a folder takes its classes from sub-folder names; "
            "--labels is for IDX and NumPy sources, drop it"
        )
    if kind == "folder":
        report = ing.ingest_folder(
            path, dataset=dataset, split=split, class_folders=not no_class_folders,
            skip_bad=skip_bad, settings=settings, batch_size=batch_size, max_image_pixels=limit, classes=declared,
        )
    elif kind == "arrays":
        report = ing.ingest_arrays(path, labels, dataset=dataset, split=split, settings=settings,
                                   batch_size=batch_size, max_image_pixels=limit, classes=declared)
    else:
        report = ing.ingest_idx(path, labels, dataset=dataset, split=split, settings=settings,
                                batch_size=batch_size, max_image_pixels=limit, classes=declared)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        f"{dataset}: {report.added} added, {report.existing} already present, "
        f"{report.duplicates} exact duplicates, {len(report.skipped)} skipped; {report.total} samples in all"
    )
    for item, reason in report.skipped:
        click.echo(f"skipped {item}: {reason}", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def datasets(ctx, as_json):
    """List datasets with their sample counts per split."""
    from curator.steps import run_step
    from curator.store import samples

    rows = run_step(settings_from(ctx), samples.summaries)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no datasets yet; run: curator ingest PATH --dataset NAME")
    for row in rows:
        splits = ", ".join(f"{k}={v}" for k, v in row["splits"].items())
        click.echo(f"{row['name']}: {row['samples']} samples ({splits}); {row['duplicates']} exact duplicates; "
                   f"classes: {', '.join(row['classes']) or '-'}")


@click.group()
def db():
    """Database schema commands."""


@db.command()
@click.pass_context
def upgrade(ctx):
    """Apply pending migrations (curator also does this on first connect)."""
    from curator.settings import mask_url
    from curator.store.session import get_engine, table_names

    settings = settings_from(ctx)
    engine = get_engine(settings.database_url)
    click.echo(f"{mask_url(settings.database_url)}: schema at head, tables: {', '.join(table_names(engine))}")
