"""The README's main job: a demo on the bundled sample data with the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import click

from curator.cli import settings_from

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "mnist1989"


@click.command()
@click.option("--dataset", default="mnist1989", show_default=True, help="Name of the demo dataset.")
@click.pass_context
def demo(ctx, dataset):
    """Ingest the bundled MNIST-1989 sample (7,291 train / 2,007 test, 16x16) and summarise it."""
    from curator.ingest import ingest_idx
    from curator.settings import mask_url
    from curator.store.queries import dataset_summaries

    settings = settings_from(ctx)
    for split in ("train", "test"):
        report = ingest_idx(
            SAMPLE / f"{split}-images-idx3-ubyte.gz",
            SAMPLE / f"{split}-labels-idx1-ubyte.gz",
            dataset=dataset,
            split=split,
            settings=settings,
        )
        click.echo(f"{split}: {report.added} added, {report.existing} already present")
    for row in dataset_summaries(settings):
        if row["name"] == dataset:
            click.echo(
                f"{dataset}: {row['samples']} samples {row['splits']}, {row['duplicates']} exact duplicates, "
                f"classes {', '.join(row['classes'])}"
            )
    click.echo(f"database: {mask_url(settings.database_url)}")
