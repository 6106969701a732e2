"""Label Studio commands: the local server (labelstudio up/down/status), push and pull."""

from __future__ import annotations

import json
from pathlib import Path

import click

from curator.cli import dataset_option, name_option, settings_from


@click.group()
def labelstudio():
    """Start, stop or check the local Label Studio server.

    It runs from its own virtual environment (.venv-ls, installed on first
    use), binds 127.0.0.1, keeps its data in <workspace>/labelstudio, makes no
    outbound calls and serves local files only from <workspace>/media. The
    API token is CURATOR_LABELSTUDIO_TOKEN; the user is curator@localhost.local
    (CURATOR_LABELSTUDIO_USER) with password CURATOR_LABELSTUDIO_PASSWORD
    (default: the token).
    """



def _serve(server) -> None:
    """Print the server's address and serve until Ctrl-C, then release the port."""
    click.echo(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

@labelstudio.command()
@click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds to wait for /health.")
@click.pass_context
def up(ctx, timeout):
    """Install (if needed) and start the server; wait until it answers; print the URL."""
    from curator.integrations.labelstudio import server

    info = server.start(settings_from(ctx), timeout=timeout, echo=lambda m: click.echo(m, err=True))
    click.echo(info["url"])


@labelstudio.command()
@click.pass_context
def down(ctx):
    """Stop the server started by `curator labelstudio up` for this workspace."""
    from curator.integrations.labelstudio import server

    server.stop(settings_from(ctx), echo=click.echo)


@labelstudio.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx, as_json):
    """Say whether the server answers, and where its data lives."""
    from curator.integrations.labelstudio import server

    info = server.status(settings_from(ctx))
    if as_json:
        click.echo(json.dumps(info))
    else:
        state = "running" if info["running"] else "not answering"
        click.echo(f"{info['url']}: {state}" + (f" (pid {info['pid']})" if info["pid"] else "")
                   + f"; data in {info['data_dir']}")
    if not info["running"]:
        from curator.exceptions import LabelStudioError

        raise LabelStudioError(f"Label Studio at {info['url']} does not answer; start it with: curator labelstudio up")


@labelstudio.command()
@dataset_option(help="Dataset whose predictions the backend serves.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9090, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.pass_context
def backend(ctx, dataset, host, port):
    """Serve curator as Label Studio's ML backend: /health, /setup, /predict and the /webhook receiver.

    Predictions: the newest stored prediction of each task's sample, else one
    computed then with the dataset's newest model. Annotation webhooks need the
    secret CURATOR_LABELSTUDIO_WEBHOOK_SECRET. Runs until interrupted; connect it
    to a project with `curator labelstudio connect`.
    """
    from curator.integrations.labelstudio.backend import Backend
    from curator.integrations.labelstudio.client import Client
    from curator.integrations.labelstudio.webhooks import require_secret
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    settings = settings_from(ctx)
    secret = require_secret(settings)
    with transaction(settings) as s:
        dataset_id(s, dataset)  # an unknown dataset fails here, in one line
    client = Client.from_settings(settings) if settings.labelstudio_token else None
    try:
        server = Backend(settings, dataset, secret, host=host, port=port, client=client)
    except OSError as exc:
        from curator.exceptions import ValidationError

        raise ValidationError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    _serve(server)


@labelstudio.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.pass_context
def media(ctx, host, port):
    """Serve the workspace's media folder to Label Studio's labelers by signed, expiring URLs (push --media serve).

    Only a URL signed with CURATOR_LABELSTUDIO_MEDIA_SECRET for one file, before
    its expiry, is answered; the log shows paths, never signatures. Set
    CURATOR_LABELSTUDIO_MEDIA_URL to this server's address as the browsers reach it.
    """
    from curator.integrations.labelstudio.media import MediaServer

    settings = settings_from(ctx)
    try:
        server = MediaServer(settings, host=host, port=port)
    except OSError as exc:
        from curator.exceptions import ValidationError

        raise ValidationError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    _serve(server)


@labelstudio.command()
@dataset_option(required=False, help="Dataset whose default project to connect.")
@name_option("--project", kind="project", help="Project title (default: the only project, or curator-<dataset>).")
@click.option("--url", default="http://127.0.0.1:9090", show_default=True,
              help="Where `curator labelstudio backend` listens, as the Label Studio server reaches it.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def connect(ctx, dataset, project, url, as_json):
    """Connect a running backend to a project: annotation webhook (with the secret) and ML backend."""
    from curator.integrations.labelstudio.backend import connect as do_connect

    settings = settings_from(ctx)
    info = do_connect(settings, _project_name(settings, project, dataset), url)
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(f"{info['project']} (id {info['project_id']}): ML backend {info['ml_backend_id']} and webhook "
                   f"{info['webhook_id']} -> {info['url']}")


def _read_predictions(path: Path | None) -> dict | None:
    """JSON object {sample_id: [label, score, model_version]}."""
    if path is None:
        return None
    from curator.exceptions import ValidationError

    try:
        raw = json.loads(path.read_text())
        return {int(k): (str(v[0]), float(v[1]), str(v[2])) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ValidationError(
            f"--predictions {path}: expected a JSON object {{sample_id: [label, score, model_version]}} ({exc})"
        ) from None


@click.command()
@click.option("--round", "number", type=click.IntRange(min=0), required=True,
              help="Number of the round to push, as `curator select` printed it.")
@dataset_option(required=False, help="Dataset of the round (default: the only dataset).")
@name_option("--project", kind="project", help="Label Studio project title (default: curator-<dataset>).")
@click.option("--label-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labeling configuration XML (default: image classification over the dataset's classes).")
@click.option("--predictions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON {sample_id: [label, score, model_version]} shown as pre-annotations.")
@click.option("--batch-size", default=2000, show_default=True, type=click.IntRange(min=1), help="Tasks per import request.")
@click.option("--recreate", is_flag=True, help="The project was deleted on the server: create it anew.")
@click.option("--replace-deleted", is_flag=True, help="Push again samples whose task was deleted by hand.")
@click.option("--overlap", type=click.IntRange(min=1), default=None,
              help="Labelers per task (the project's maximum annotations; default 1 for a new project).")
@click.option("--media", "media", type=click.Choice(["auto", "local-files", "upload", "serve"]), default=None,
              help="How images reach the server: its local-file storage (same machine), upload through the "
                   "API, or URLs signed by `curator labelstudio media`. Default: CURATOR_LABELSTUDIO_MEDIA, "
                   "else auto (local-files for a server on 127.0.0.1/localhost, upload otherwise).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def push(ctx, number, dataset, project, label_config, predictions, batch_size, recreate, replace_deleted, overlap,
         media, as_json):
    """Push a selection round to Label Studio; each sample reaches a project exactly once.

    Safe to run again after an interruption: samples already on the server are
    recognised by their sample id and not imported twice.
    """
    from curator.integrations.labelstudio.push import push as do_push
    from curator.store.queries import resolve_dataset
    from curator.store.session import transaction

    settings = settings_from(ctx)
    with transaction(settings) as s:
        _, dataset = resolve_dataset(s, dataset)
    report = do_push(
        settings, dataset, number, project=project,
        label_config=label_config.read_text() if label_config else None,
        predictions=_read_predictions(predictions), batch_size=batch_size,
        recreate=recreate, replace_deleted=replace_deleted, overlap=overlap, media=media,
    )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        f"{dataset}: round {number} -> project {report.project!r} (id {report.project_id}): {report.imported} imported, "
        f"{report.already_linked} already there, {report.reconciled} recovered from an interrupted push; "
        f"{report.url}/projects/{report.project_id}/data?tab={report.view_id}"
    )


@click.command()
@name_option("--project", kind="project", help="Project title (default: the only project, or curator-<dataset>).")
@dataset_option(required=False, help="Dataset whose default project to pull.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def pull(ctx, project, dataset, as_json):
    """Pull new, updated and deleted annotations from Label Studio into the database."""
    from curator.integrations.labelstudio.pull import pull as do_pull

    settings = settings_from(ctx)
    report = do_pull(settings, _project_name(settings, project, dataset))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(
            f"{report.project}: {report.new} new, {report.updated} updated, {report.deleted} deleted, "
            f"{report.unchanged} unchanged annotations ({report.skipped} skipped); "
            f"{report.labeled_samples} samples labeled, {report.disagreements} with disagreement"
        )
    if report.missing_tasks:
        from curator.exceptions import LabelStudioError

        raise LabelStudioError(
            f"{len(report.missing_tasks)} task(s) of {report.project!r} were deleted on the server "
            f"(samples {report.missing_tasks[:5]}); their annotations are now marked deleted; to label them "
            "again: curator push --replace-deleted"
        )


def _project_name(settings, project, dataset) -> str:
    from curator.exceptions import ValidationError
    from curator.integrations.labelstudio import TOOL
    from curator.integrations.labelstudio.push import default_project_name
    from curator.store import annotations as store
    from curator.store.session import transaction

    if project:
        return project
    if dataset:
        from curator.store.queries import dataset_id

        with transaction(settings) as s:
            dataset_id(s, dataset)  # an unknown dataset is named as such, not as an unknown project
        return default_project_name(dataset)
    with transaction(settings) as s:
        names = store.project_names(s, TOOL)
    if len(names) != 1:
        raise ValidationError(
            f"pass --project (known projects: {', '.join(names) or 'none; push a round first'})"
        )
    return names[0]
