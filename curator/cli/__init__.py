"""The ``curator`` command line: parse, resolve settings, make one call, print.

Commands live in their own modules and are imported only when run, so
``curator --help`` answers at once without torch, faiss or sqlalchemy.
Errors print one line (``error: ...``) and exit with the code of their family.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from curator import __version__
from curator.exceptions import CuratorError

#: command name -> "module:attribute"; a command appears once its module exists.
COMMANDS = {
    "config": "curator.cli.basic:config",
    "ingest": "curator.cli.basic:ingest",
    "datasets": "curator.cli.basic:datasets",
    "db": "curator.cli.basic:db",
    "demo": "curator.cli.demo:demo",
    "score": "curator.cli.engine:score",
    "select": "curator.cli.engine:select",
    "policies": "curator.cli.engine:policies_cmd",
    "embed": "curator.cli.engine:embed",
    "dedup": "curator.cli.dedup:dedup",
    "labelstudio": "curator.cli.labelstudio:labelstudio",
    "push": "curator.cli.labelstudio:push",
    "pull": "curator.cli.labelstudio:pull",
    "version": "curator.cli.versions:version",
    "fiftyone": "curator.cli.fiftyone:fiftyone",
    "loop": "curator.cli.loop:loop",
    "report": "curator.cli.loop:report",
    "doctor": "curator.cli.doctor:doctor",
}

HELP = {
    "config": "Print the effective settings (secrets masked).",
    "ingest": "Ingest an image folder, IDX files or NumPy arrays into a dataset.",
    "datasets": "List datasets and their sample counts.",
    "db": "Database schema commands.",
    "demo": "Run the demo: a few rounds of the whole loop on the bundled sample data.",
    "score": "Score a dataset's unlabeled pool with a model.",
    "select": "Select a batch with a policy and record it as a round.",
    "policies": "List the registered selection policies.",
    "embed": "Compute and store embeddings of a dataset.",
    "dedup": "Find exact and near-duplicate groups in a dataset.",
    "labelstudio": "Start, stop or check the local Label Studio server.",
    "push": "Push a selection round to Label Studio as tasks.",
    "pull": "Pull annotations from Label Studio.",
    "version": "Create, list, show, diff, verify and export labeled-set versions.",
    "fiftyone": "Sync curator state to FiftyOne, or import a FiftyOne dataset.",
    "loop": "Run rounds of the continuous-improvement loop.",
    "report": "Write the learning-curve report of a dataset.",
    "doctor": "Report (and --fix) files crashes left behind: orphans, staging leftovers, stale temp files.",
}


def _available() -> list[str]:
    out = []
    for name, target in COMMANDS.items():
        module = target.split(":")[0]
        try:
            if importlib.util.find_spec(module) is not None:
                out.append(name)
        except ModuleNotFoundError:
            pass
    return out


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_available())

    def get_command(self, ctx, name):
        if name not in _available():
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(n, HELP.get(n, "")) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="curator")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file.")
@click.pass_context
def cli(ctx, config_file):
    """curator: choose what to label next, without copies, and keep every labeled set.

    Settings come from flags, then CURATOR_* environment variables, then the
    config file (--config, $CURATOR_CONFIG or ./curator.toml).
    """
    ctx.obj = {"config": config_file}


def settings_from(ctx: click.Context, **overrides):
    from curator.settings import load_settings, private_workspace

    root = ctx.find_root().obj
    settings = load_settings(root.get("config"), **{**root.get("overrides", {}), **overrides})
    if settings.workspace.is_dir():
        private_workspace(settings.workspace)  # an existing workspace open to others is tightened
    return settings


def connect_executor(settings):
    """The settings' executor, connected: a Ray cluster that cannot be reached is refused before
    any model is trained or any image read."""
    from curator.executors import get_executor

    return get_executor(settings).connect()


def dataset_option(*decls: str, required: bool = True, help: str = "Dataset name.", **kw):
    """The ``--dataset`` option of a command: the name is checked and normalised as it is parsed."""
    from curator.names import callback

    return click.option(*(decls or ("--dataset", "-d")), required=required, help=help,
                        callback=callback("dataset"), **kw)


def executor_options(f):
    """``--executor`` and ``--ray-address`` of a command whose compute an executor runs
    (``curator.executors``): they override the settings (``CURATOR_EXECUTOR``, the config file)."""
    import functools

    @click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
                  help="Where the model, the duplicate search and the policy run (default: the settings', local).")
    @click.option("--ray-address", default=None, metavar="HOST:PORT",
                  help="Ray cluster for --executor ray (host:port, ray://host:port or auto).")
    @functools.wraps(f)
    def wrapper(*args, executor=None, ray_address=None, **kwargs):
        obj = click.get_current_context().find_root().obj
        obj.setdefault("overrides", {}).update({"executor": executor, "ray_address": ray_address})
        return f(*args, **kwargs)

    return wrapper


def name_option(*decls: str, kind: str, **kw):
    """An option holding a version name or a project title, checked as it is parsed."""
    from curator.names import callback

    return click.option(*decls, callback=callback(kind), **kw)


def one_line(message: str) -> str:
    """Errors are one line: a script reads the first line, a person sees all of it."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _usage_line(exc: click.UsageError) -> str:
    """click's usage error as one line, with the --help hint click prints on a line of its own."""
    msg = one_line(exc.format_message())
    if exc.ctx is not None:
        msg += f" (see: {exc.ctx.command_path} --help)"
    return msg


def main(argv: list[str] | None = None) -> None:
    from curator.settings import private_umask

    try:
        with private_umask():  # what curator writes (workspace, Label Studio data) is 0600/0700
            cli.main(args=argv, prog_name="curator", standalone_mode=False)
    except CuratorError as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        click.echo(f"error: {_usage_line(exc)}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; run the command again to resume", err=True)
        sys.exit(130)
    sys.exit(0)
