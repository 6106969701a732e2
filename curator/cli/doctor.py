"""``curator doctor``: report (and with --fix remove) what crashes left in the workspace."""

from __future__ import annotations

import json
from collections import defaultdict

import click

from curator.cli import settings_from


@click.command()
@click.option("--fix", is_flag=True, help="Remove the leftovers (default: only report them).")
@click.option("--min-age", type=click.IntRange(min=0), default=None,
              help="Seconds a file must be untouched to count (default 3600; staging folders of dead "
                   "ingests count at once).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def doctor(ctx, fix, min_age, as_json):
    """Find files no database row points to: staged files of killed ingests, media files without
    a sample, embedding and model files without a row, stale *.tmp files.

    A dry run by default; --fix moves committed staged files into place and deletes the rest.
    """
    from curator.ingest.doctor import DEFAULT_MIN_AGE, examine
    from curator.settings import private_workspace

    settings = settings_from(ctx)
    if settings.workspace.exists():
        private_workspace(settings.workspace)
    found = examine(settings, fix=fix, min_age=DEFAULT_MIN_AGE if min_age is None else min_age)
    if as_json:
        click.echo(json.dumps({"workspace": str(settings.workspace), "fixed": fix,
                               "findings": [f.as_dict() for f in found]}, indent=2))
        return
    if not found:
        click.echo(f"{settings.workspace}: no leftovers")
        return
    groups = defaultdict(list)
    for f in found:
        groups[(f.kind, f.action, f.reason)].append(f)
    done = {"delete": "deleted", "publish": "moved into place", "keep": "kept"}
    todo = {"delete": "to delete", "publish": "to move into place", "keep": "kept"}
    for (kind, action, reason), items in groups.items():
        size = sum(f.size for f in items)
        verb = (done if fix else todo)[action]
        click.echo(f"{kind:10} {len(items):7d} files {verb} ({size / 1e6:.1f} MB): {reason}; "
                   f"e.g. {items[0].path}")
    if not fix and any(f.action != "keep" for f in found):
        click.echo("dry run: nothing changed; run `curator doctor --fix` to clean up")
