"""``curator version``: create, list, show, diff, verify, export and import labeled-set versions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from curator.cli import dataset_option, settings_from

FORMATS = ("numpy", "torch", "manifest", "imagefolder", "csv", "jsonl", "hf")


def fiftyone_exporter():
    """The FiftyOne integration's ``sync`` (which builds the FiftyOne dataset of a
    version), or None when that integration is absent or does not provide it."""
    import importlib

    try:
        module = importlib.import_module("curator.integrations.fiftyone")
    except ImportError:
        return None
    return getattr(module, "sync", None)


def _formats() -> list[str]:
    """Export formats; ``fiftyone`` only when the FiftyOne integration can build one."""
    return list(FORMATS) + (["fiftyone"] if fiftyone_exporter() is not None else [])


def _check_format(ctx, param, value):
    """--format checked here (not by click.Choice) so a bad value is one ``error:`` line."""
    from curator.exceptions import ValidationError

    formats = _formats()
    if value is None:
        raise ValidationError(f"--format: required; one of {', '.join(formats)}")
    if value.lower() not in formats:
        hint = " (install curator-loop[fiftyone] for fiftyone)" if value.lower() == "fiftyone" else ""
        raise ValidationError(f"--format {value!r}: not a format; use one of {', '.join(formats)}{hint}")
    return value.lower()


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _summary(v) -> str:
    ch = v.changes
    delta = f"+{ch.get('added', 0)} ~{ch.get('relabeled', 0)} -{ch.get('removed', 0)}" if v.parent else "root"
    return f"{v.name:24} {v.size:>9} labels  parent {v.parent or '-':16} {delta:20} {v.checksum[:12]}  {v.created_at[:19]}"


@click.group()
def version():
    """Create, list, show, diff, verify and export immutable labeled-set versions."""


@version.command()
@click.argument("name")
@dataset_option(required=False, help="Dataset (default: the only one).")
@click.option("--message", "-m", help="What this version is for.")
@click.option("--parent", help="Parent version (default: the newest with the same filters).")
@click.option("--root", is_flag=True, help="Start a new line of versions (no parent).")
@click.option("--split", multiple=True, help="Only samples of this split (repeatable).")
@click.option("--round", "rounds", multiple=True, type=int, help="Only samples selected in this round number (repeatable).")
@click.option("--aggregate", type=click.Choice(["majority", "dawid-skene"]), default="majority", show_default=True,
              help="How several labelers' answers to a sample become its label (recorded in the lineage).")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@click.pass_context
def create(ctx, name, dataset, message, parent, root, split, rounds, aggregate, as_json):
    """Freeze the current agreed labels as version NAME."""
    from curator.exceptions import ValidationError
    from curator.versions import LATEST, create_version

    if root and parent:
        raise ValidationError("--root and --parent exclude each other; pass one")
    v = create_version(
        name, dataset=dataset, message=message, parent=None if root else (parent or LATEST),
        split=list(split) or None, rounds=list(rounds) or None, settings=settings_from(ctx), aggregate=aggregate,
    )
    if as_json:
        _echo_json(v.as_dict())
        return
    click.echo(f"created {_summary(v)}")
    click.echo(f"checksum {v.checksum}")


@version.command("list")
@dataset_option(required=False, help="Dataset (default: the only one).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_(ctx, dataset, as_json):
    """List the versions of a dataset, oldest first."""
    from curator.versions import list_versions

    rows = list_versions(dataset=dataset, settings=settings_from(ctx))
    if as_json:
        _echo_json([v.as_dict() for v in rows])
        return
    if not rows:
        click.echo("no versions yet; create one with: curator version create NAME")
    for v in rows:
        click.echo(_summary(v))


@version.command()
@click.argument("name")
@dataset_option(required=False, help="Dataset (default: the only one).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx, name, dataset, as_json):
    """Show a version: counts per class, lineage, checksum."""
    from curator.versions import show_version

    v = show_version(name, dataset=dataset, settings=settings_from(ctx))
    if as_json:
        _echo_json(v.as_dict())
        return
    click.echo(f"version   {v.name} (dataset {v.dataset}, created {v.created_at[:19]})")
    if v.message:
        click.echo(f"message   {v.message}")
    click.echo(f"parent    {v.parent or '-'}  changes {v.changes}")
    click.echo(f"filters   {v.filters or '-'}")
    click.echo(f"size      {v.size}   checksum {v.checksum}")
    click.echo("counts    " + ", ".join(f"{k}={n}" for k, n in v.counts.items()))
    lin = v.lineage
    click.echo(f"policies  {', '.join(lin.get('policies', [])) or '-'}")
    click.echo("models    " + (", ".join(f"{m['name']}:{m['version']}" for m in lin.get("models", [])) or "-"))
    for r in lin.get("rounds", []):
        click.echo(f"  round {r['number']}: {r['samples']} samples, policy {r['policy']}, model {r['model'] or '-'}")
    click.echo(f"  outside any round: {lin.get('outside_rounds', 0)} samples")
    agg = lin.get("aggregation")
    if agg:  # versions made before issue 17 do not record it (they used the majority)
        click.echo(f"labels    by {agg['method']} ({agg.get('samples_with_several_answers', 0)} samples with 2+ answers"
                   + (f", {agg['changed_from_majority']} differ from the majority" if "changed_from_majority" in agg
                      else "") + ")")


@version.command("diff")
@click.argument("a")
@click.argument("b")
@dataset_option(required=False, help="Dataset (default: the only one).")
@click.option("--limit", default=20, show_default=True, help="Samples listed per kind of change (JSON: all with --limit 0).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def diff_(ctx, a, b, dataset, limit, as_json):
    """Compare versions A and B: added, removed and relabeled samples, per-class changes."""
    from curator.versions import diff_versions

    d = diff_versions(a, b, dataset=dataset, settings=settings_from(ctx))
    if as_json:
        _echo_json(d.as_dict(None if limit == 0 else limit))
        return
    click.echo(f"{a} -> {b}: {len(d.added)} added, {len(d.removed)} removed, {len(d.relabeled)} relabeled")
    for sid, lab in d.added[:limit]:
        click.echo(f"  + {sid} {lab}")
    for sid, lab in d.removed[:limit]:
        click.echo(f"  - {sid} {lab}")
    for sid, old, new in d.relabeled[:limit]:
        click.echo(f"  ~ {sid} {old} -> {new}")
    changed = {c: r for c, r in d.per_class.items() if any(r[k] for k in ("added", "removed", "relabeled_in", "relabeled_out"))}
    if changed:
        click.echo("per class (a -> b: +added -removed +relabeled in -relabeled out):")
        for c, r in changed.items():
            click.echo(f"  {c}: {r['a']} -> {r['b']} (+{r['added']} -{r['removed']} +{r['relabeled_in']} -{r['relabeled_out']})")


@version.command()
@click.argument("name")
@dataset_option(required=False, help="Dataset (default: the only one).")
@click.option("--files", is_flag=True, help="Also re-hash every sample file on disk.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def verify(ctx, name, dataset, files, as_json):
    """Recompute a version's checksum from the database; exit non-zero on any difference."""
    from curator.exceptions import StoreError
    from curator.versions import verify_version

    r = verify_version(name, dataset=dataset, files=files, settings=settings_from(ctx))
    if as_json:
        _echo_json(r.as_dict())
    elif r.ok:
        click.echo(f"{name}: ok, {r.size} labels, checksum {r.computed_checksum}")
    if not r.ok:
        raise StoreError(f"version {name!r} fails verification: " + "; ".join(r.problems))


@version.command()
@click.argument("name")
@click.option("--format", "fmt", callback=_check_format,
              help="numpy (.npz), torch (.pt), manifest (.json), imagefolder (a folder of class folders), "
                   "csv, jsonl (one row per sample), hf (a Hugging Face dataset folder), fiftyone.")
@click.option("--out", "out", type=click.Path(path_type=Path),
              help="Output file, or a new folder for imagefolder and hf (fiftyone: the FiftyOne dataset name, "
                   "default curator-DATASET-NAME).")
@click.option("--copy", "copy_files", is_flag=True, help="imagefolder: copy the images (default: symbolic links).")
@dataset_option(required=False, help="Dataset (default: the only one).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def export(ctx, name, fmt, out, copy_files, dataset, as_json):
    """Export version NAME as NumPy arrays, a torch file, a JSON manifest, an ImageFolder tree,
    a CSV or JSONL table, a Hugging Face dataset or a FiftyOne dataset.

    Files and folders appear whole or not at all (written beside the target, then renamed);
    folders are never written into or over an existing path.
    """
    from curator import versions as V
    from curator.exceptions import ValidationError

    settings = settings_from(ctx)
    if fmt != "fiftyone" and out is None:
        raise ValidationError(f"--out: required for --format {fmt} (e.g. --out {name}{_SUFFIX[fmt]})")
    if copy_files and fmt != "imagefolder":
        raise ValidationError(f"--copy: only for --format imagefolder (not {fmt}); drop it")
    if fmt == "imagefolder":
        n = V.export_imagefolder(name, out, copy=copy_files, dataset=dataset, settings=settings)["samples"]
    elif fmt in ("csv", "jsonl"):
        n = V.export_table(name, out, fmt, dataset=dataset, settings=settings)["samples"]
    elif fmt == "hf":
        n = V.export_hf(name, out, dataset=dataset, settings=settings)["samples"]
    elif fmt == "manifest":
        doc = V.export_manifest(name, out, dataset=dataset, settings=settings)
        n = len(doc["items"])
    elif fmt == "numpy":
        n = len(V.export_numpy(name, out, dataset=dataset, settings=settings)["labels"])
    elif fmt == "torch":
        n = len(V.export_torch(name, out, dataset=dataset, settings=settings)["labels"])
    else:
        ds_name = V.show_version(name, dataset=dataset, settings=settings).dataset  # validates the name first
        report = fiftyone_exporter()(settings, ds_name, version=name, fo_name=str(out) if out else None,
                                     similarity=False, visualization=None)
        out, n = report.fo_dataset, report.samples
    if as_json:
        _echo_json({"version": name, "format": fmt, "out": str(out), "samples": n})
    else:
        click.echo(f"exported {name} ({n} samples) as {fmt} to {out}")


_SUFFIX = {"numpy": ".npz", "torch": ".pt", "manifest": ".json", "imagefolder": "-images", "csv": ".csv",
           "jsonl": ".jsonl", "hf": "-hf", "fiftyone": ""}


@version.command("import")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--name", help="Version name (default: the manifest's).")
@dataset_option(required=False, help="Target dataset (default: the manifest's).")
@click.option("--message", "-m")
@click.option("--allow-unverified", is_flag=True,
              help="Import a manifest that has no checksum or seal, or no longer matches them (edited on purpose).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def import_(ctx, manifest, name, dataset, message, allow_unverified, as_json):
    """Re-create a version from a JSON manifest, in one transaction.

    Fails, storing nothing, unless the manifest's checksum (over its labels)
    and seal (over every field) match; --allow-unverified imports it anyway.
    """
    from curator.versions import import_manifest

    v = import_manifest(manifest, dataset=dataset, name=name, message=message,
                        allow_unverified=allow_unverified, settings=settings_from(ctx))
    if as_json:
        _echo_json(v.as_dict())
    else:
        click.echo(f"imported {_summary(v)}")
        verified = "unverified" not in v.filters.get("source", "")
        click.echo(f"checksum {v.checksum}" + (" (matches the manifest)" if verified else " (manifest not verified)"))
