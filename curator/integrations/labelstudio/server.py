"""A local, offline Label Studio server started by curator.

Label Studio pins its own versions of many packages, so it lives in its own
virtual environment (``.venv-ls`` at the repository root, created on first
use). The server binds 127.0.0.1 only, keeps its data in the workspace
(``<workspace>/labelstudio``), makes no outbound calls (version check, Sentry,
analytics off), logs in a known user whose API token comes from
``CURATOR_LABELSTUDIO_TOKEN``, and serves local files only from the
workspace's media folder (``settings.media_dir``).

The data folder holds the API token (in Label Studio's database) and the
secret key, so it is private to its user: created 0700 (an existing one is
tightened), and the server and everything curator writes there run under
umask 077 (files 0600, folders 0700); the server runs as the same user.

It serves with gunicorn, ``workers()`` processes (Label Studio's request handling
is Python under one GIL per process, so one process is one core), after Label Studio's
own start-up steps (``lsserver/launch.py``); without gunicorn in ``.venv-ls`` it falls
back to Label Studio's ``runserver`` (one process) and says so.

The process runs in its own session (process group); ``stop`` ends that group
and nothing else. A pid file in the data folder lets ``status``/``stop`` find
it from another shell.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from curator.exceptions import LabelStudioError, ValidationError

LS_VERSION = "1.23.2"
ROOT = Path(__file__).resolve().parents[3]
DEFAULT_VENV = ROOT / ".venv-ls"
DEFAULT_USER = "curator@localhost.local"
USER_ENV = "CURATOR_LABELSTUDIO_USER"
PASSWORD_ENV = "CURATOR_LABELSTUDIO_PASSWORD"
#: Variables Label Studio also reads under these plain names; never inherited.
_SHADOWING = ("HOST", "PORT", "USERNAME", "PASSWORD", "DJANGO_DB", "DATABASE_URL")


#: Run by Label Studio's interpreter: ``label-studio start``'s setup, then gunicorn (lsserver/).
LAUNCHER = Path(__file__).resolve().parent / "lsserver" / "launch.py"
WORKERS_ENV = "CURATOR_LABELSTUDIO_WORKERS"
#: Threads per worker process: enough that requests waiting on I/O (a webhook posted inside an
#: annotation request, an ML backend's predict) do not hold a worker; CPU work is one per process.
THREADS = 4


def workers() -> int:
    """Worker processes: one per usable core (the server's work is CPU in Python, one GIL each).

    At least 2 (so that a slow request never blocks the UI), at most 8 (each worker holds
    ~270 MB of Label Studio); ``CURATOR_LABELSTUDIO_WORKERS`` overrides.
    """
    raw = os.environ.get(WORKERS_ENV)
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise ValidationError(f"{WORKERS_ENV}={raw!r}: give a whole number of worker processes, 1 or more")
        return n
    return per_core()


def per_core() -> int:
    """One per usable core of this machine, at least 2, at most 8: the server's processes, and
    the requests curator sends at once to a server started here (``labelstudio_parallel`` 0)."""
    return max(2, min(8, len(os.sched_getaffinity(0))))


def venv_dir() -> Path:
    return Path(os.environ.get("CURATOR_LABELSTUDIO_VENV", DEFAULT_VENV))


def executable(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "label-studio"


def ensure_installed(venv: Path | None = None, echo=print) -> Path:
    """Create ``.venv-ls`` with label-studio if it is missing; return the executable."""
    venv = venv or venv_dir()
    exe = executable(venv)
    if exe.exists():
        return exe
    echo(f"installing label-studio=={LS_VERSION} into {venv} (about a minute, ~1 GB) ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"label-studio=={LS_VERSION}", "gunicorn"], check=True
        )
    except subprocess.CalledProcessError as exc:
        raise LabelStudioError(
            f"installing label-studio into {venv} failed ({exc}); check access to the package "
            f"registry, or install it by hand: python3 -m venv {venv} && "
            f"{venv}/bin/pip install label-studio=={LS_VERSION} gunicorn"
        ) from None
    return exe


def data_dir(settings) -> Path:
    return Path(settings.workspace).resolve() / "labelstudio"


def private_data_dir(settings) -> Path:
    """The data folder, created 0700 or tightened to it, its files to 0600 (it holds the token)."""
    from curator.settings import private_workspace

    data = data_dir(settings)
    private_workspace(data)
    for path in data.iterdir():
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
    return data


def _pid_file(data: Path) -> Path:
    return data / "server.json"


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValidationError(
            f"labelstudio_url {url!r}: the local server binds 127.0.0.1 only; "
            "use http://127.0.0.1:PORT (set CURATOR_LABELSTUDIO_URL)"
        )
    return "127.0.0.1", parts.port or 80


def health(url: str, timeout: float = 2.0) -> bool:
    """True when ``url``/health answers 200."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    from curator.store.locks import pid_alive

    try:  # a child of this process that exited counts as gone (and is reaped)
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:  # not our child: started by an earlier `curator labelstudio up`
        return pid_alive(pid)


def server_env(settings, data: Path, user: str, password: str) -> dict[str, str]:
    """The environment of the server process: offline, known user, files from media only."""
    media = Path(settings.media_dir).resolve()
    media.mkdir(parents=True, exist_ok=True)
    secret_file = data / "secret_key"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(48))
        secret_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in _SHADOWING}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data),
        LABEL_STUDIO_USERNAME=user,
        LABEL_STUDIO_PASSWORD=password,
        LABEL_STUDIO_USER_TOKEN=settings.labelstudio_token,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        LOCAL_FILES_SERVING_ENABLED="true",
        LOCAL_FILES_DOCUMENT_ROOT=str(media),
        SECRET_KEY=secret_file.read_text().strip(),
        LATEST_VERSION_CHECK="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        COLLECT_ANALYTICS="false",
        LABEL_STUDIO_DISABLE_TELEMETRY="true",
        PYTHONUNBUFFERED="1",
        # curator's ML backend and webhook receiver listen on 127.0.0.1: let the server call that one
        # address (Label Studio blocks every reserved network by default), nothing else of loopback
        USE_DEFAULT_BANNED_SUBNETS="false",
        USER_ADDITIONAL_BANNED_SUBNETS=",".join(banned_subnets()),
        ML_BLOCK_LOCAL_IP="true",
        # Label Studio's own batched import of predictions (bulk_create per 500, no per-prediction
        # LabelInterface validation, ~1.9 ms each): push sends pre-annotations in one
        # import/predictions request and checks their labels against the configuration itself
        fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short="true",
        # Label Studio's finite-state-machine fields are off in 1.23 (feature_flags.json), but its task
        # and annotation serialisers ask LaunchDarkly's offline client so for every row of a listing,
        # about a fifth of a pull's server CPU (profiled 2026-12-01); the environment's answer is the
        # same one, read first
        fflag_feat_fit_568_finite_state_management="false",
        fflag_feat_fit_710_fsm_state_fields="false",
    )
    return env


#: Label Studio's default banned networks (core/utils/io.py ``validate_ip``), IPv4 and IPv6.
_RESERVED = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
             "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
             "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "233.252.0.0/24", "240.0.0.0/4",
             "255.255.255.255/32", "::/128", "::1/128", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96",
             "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:20::/28", "2001:db8::/32", "2002::/16", "fc00::/7",
             "fe80::/10", "ff00::/8")


def banned_subnets() -> list[str]:
    """The reserved networks minus 127.0.0.1 alone: the one address curator's callbacks bind."""
    import ipaddress

    out = []
    for net in map(ipaddress.ip_network, _RESERVED):
        if net.version == 4 and ipaddress.ip_address("127.0.0.1") in net:
            out.extend(str(n) for n in net.address_exclude(ipaddress.ip_network("127.0.0.1/32")))
        else:
            out.append(str(net))
    return out


def _check_token(settings) -> str:
    token = settings.labelstudio_token
    if not token or len(token) < 6:
        raise ValidationError(
            "no Label Studio token: set CURATOR_LABELSTUDIO_TOKEN (6 characters or more) "
            "or labelstudio_token in the config file"
        )
    return token


def status(settings) -> dict:
    """Where the server stands: url, pid (if started by curator), answering or not."""
    data = data_dir(settings)
    info = {"url": settings.labelstudio_url, "data_dir": str(data), "pid": None, "running": False}
    pf = _pid_file(data)
    if pf.exists():
        saved = json.loads(pf.read_text())
        if _alive(saved["pid"]):
            info["pid"] = saved["pid"]
    info["running"] = health(settings.labelstudio_url)
    return info


def start(settings, *, timeout: float = 240.0, echo=print, install: bool = True) -> dict:
    """Start the server (or find it already answering) and wait for /health.

    Returns ``status``. A server that dies while starting raises
    ``LabelStudioError`` with the tail of its log (the token redacted).
    """
    token = _check_token(settings)
    url = settings.labelstudio_url.rstrip("/")
    host, port = _host_port(url)
    if health(url):
        echo(f"Label Studio already answers at {url}")
        return status(settings)
    exe = ensure_installed(echo=echo) if install else executable()
    if not exe.exists():
        raise LabelStudioError(f"{exe} is missing; run: curator labelstudio up (it installs it)")
    if not (exe.parent / "gunicorn").exists():
        echo(f"gunicorn is not installed in {exe.parent.parent}: Label Studio runs as ONE process "
             f"(Django runserver); for several: {exe.parent / 'pip'} install gunicorn")
    from curator.settings import PRIVATE_UMASK, private_umask

    data = private_data_dir(settings)
    user = os.environ.get(USER_ENV, DEFAULT_USER)
    password = os.environ.get(PASSWORD_ENV) or token
    log = data / "server.log"
    with private_umask():
        if (data / "label_studio.sqlite3").exists():
            _set_credentials(exe, server_env(settings, data, user, password), data, log)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [str(exe.parent / "python"), str(LAUNCHER), host, str(port), str(workers()), str(THREADS)],
                env=server_env(settings, data, user, password),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=data,
                umask=PRIVATE_UMASK,
            )
        _pid_file(data).write_text(json.dumps({"pid": proc.pid, "url": url}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _pid_file(data).unlink(missing_ok=True)
            raise LabelStudioError(
                f"Label Studio exited with code {proc.returncode} while starting on {url}; "
                f"last lines of {log}:\n{_tail(log, token)}"
            )
        if health(url):
            echo(f"Label Studio is up at {url} (user {user}; data in {data})")
            return status(settings)
        time.sleep(1.0)
    _stop_pid(proc.pid)
    _pid_file(data).unlink(missing_ok=True)
    raise LabelStudioError(
        f"Label Studio did not answer at {url}/health within {timeout:.0f} s; see {log}"
    )


#: Run by the server's own Python: Label Studio applies LABEL_STUDIO_USER_TOKEN only when it
#: creates the user, so on an existing data folder the token (and password) of the environment
#: are set here. Both are read from the environment, never from the command line.
_SET_CREDENTIALS = """
import os, sys
import label_studio
sys.path.insert(0, os.path.dirname(label_studio.__file__))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings.label_studio")
import django
django.setup()
from rest_framework.authtoken.models import Token
from users.models import User
user = User.objects.filter(email=os.environ["LABEL_STUDIO_USERNAME"]).first()
if user is not None:
    token = os.environ["LABEL_STUDIO_USER_TOKEN"]
    if not Token.objects.filter(user=user, key=token).exists():
        Token.objects.filter(user=user).delete()
        Token.objects.create(user=user, key=token)
        print("token of", user.email, "updated")
    if not user.check_password(os.environ["LABEL_STUDIO_PASSWORD"]):
        user.set_password(os.environ["LABEL_STUDIO_PASSWORD"])
        user.save()
"""


def _set_credentials(exe: Path, env: dict[str, str], data: Path, log: Path) -> None:
    """Give the known user of an existing data folder the token of this start."""
    from curator.settings import PRIVATE_UMASK

    with open(log, "ab") as out:
        done = subprocess.run([str(exe.parent / "python"), "-c", _SET_CREDENTIALS], env=env, cwd=data,
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              umask=PRIVATE_UMASK)
    if done.returncode != 0:
        raise LabelStudioError(
            f"could not set the API token of the Label Studio user in {data} (exit {done.returncode}); "
            f"see {log}, or start with a fresh data folder"
        )


def _tail(log: Path, token: str, n: int = 15) -> str:
    lines = log.read_text(errors="replace").splitlines()[-n:]
    return "\n".join(lines).replace(token, "****")


def _stop_pid(pid: int, grace: float = 20.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.2)
    try:  # children of the group (gunicorn workers ...) go too
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(settings, echo=print) -> bool:
    """Stop the server curator started for this workspace; False if none was running."""
    pf = _pid_file(data_dir(settings))
    if not pf.exists():
        echo("no Label Studio server started by curator for this workspace")
        return False
    pid = json.loads(pf.read_text())["pid"]
    _stop_pid(pid)
    pf.unlink(missing_ok=True)
    echo(f"Label Studio (pid {pid}) stopped")
    return True
