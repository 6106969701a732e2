"""Settings resolved once: explicit arguments > environment > config file > defaults.

Standard library only, so the CLI answers at once. Secrets (the Label Studio
token) are kept out of ``repr`` and printed masked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
import tomllib
from pathlib import Path

from curator.exceptions import ValidationError

#: Environment variable -> settings field.
ENV = {
    "CURATOR_DB_URL": "db_url",
    "CURATOR_WORKSPACE": "workspace",
    "CURATOR_LABELSTUDIO_URL": "labelstudio_url",
    "CURATOR_LABELSTUDIO_TOKEN": "labelstudio_token",
    "CURATOR_LABELSTUDIO_TIMEOUT": "labelstudio_timeout",
    "CURATOR_LABELSTUDIO_CONNECT_TIMEOUT": "labelstudio_connect_timeout",
    "CURATOR_LABELSTUDIO_RETRIES": "labelstudio_retries",
    "CURATOR_LABELSTUDIO_PARALLEL": "labelstudio_parallel",
    "CURATOR_LABELSTUDIO_WEBHOOK_SECRET": "labelstudio_webhook_secret",
    "CURATOR_LABELSTUDIO_MEDIA": "labelstudio_media",
    "CURATOR_LABELSTUDIO_MEDIA_URL": "labelstudio_media_url",
    "CURATOR_LABELSTUDIO_MEDIA_SECRET": "labelstudio_media_secret",
    "CURATOR_LABELSTUDIO_MEDIA_TTL": "labelstudio_media_ttl",
    "CURATOR_EXECUTOR": "executor",
    "CURATOR_RAY_ADDRESS": "ray_address",
    "CURATOR_RAY_BATCH_SIZE": "ray_batch_size",
    "CURATOR_RAY_CONCURRENCY": "ray_concurrency",
    "CURATOR_RAY_NUM_CPUS": "ray_num_cpus",
    "CURATOR_RAY_NUM_GPUS": "ray_num_gpus",
    "CURATOR_SSL_REFRESH_SHARE": "ssl_refresh_share",
}
#: Where the compute part of each step runs (curator.executors.EXECUTORS; kept here so the
#: settings stay standard-library only).
EXECUTORS = ("local", "ray")
SECRET_FIELDS = frozenset({"labelstudio_token", "labelstudio_webhook_secret", "labelstudio_media_secret"})
CONFIG_ENV = "CURATOR_CONFIG"
DEFAULT_CONFIG_NAME = "curator.toml"


@dataclasses.dataclass(frozen=True)
class Settings:
    workspace: Path = Path(".curator")
    db_url: str | None = dataclasses.field(default=None, repr=False)
    labelstudio_url: str = "http://127.0.0.1:8080"
    labelstudio_token: str | None = dataclasses.field(default=None, repr=False)
    #: Seconds to wait for an answer from Label Studio (an import of 10,000 tasks takes about 10 s).
    labelstudio_timeout: float = 60.0
    #: Seconds to wait for a connection to Label Studio.
    labelstudio_connect_timeout: float = 10.0
    #: Retries after a failed request (connection error, 5xx, 429), with exponential backoff.
    labelstudio_retries: int = 2
    #: Requests curator sends Label Studio at once when reading pages or importing predictions: one
    #: per server process (``curator labelstudio up`` starts one per core); 0: that rule on this machine.
    labelstudio_parallel: int = 0
    #: Shared secret Label Studio sends (header X-Curator-Secret) with each webhook; curator's receiver checks it.
    labelstudio_webhook_secret: str | None = dataclasses.field(default=None, repr=False)
    #: How images reach Label Studio (curator.integrations.labelstudio.media): local-files, upload,
    #: serve, or auto (local-files when the server's URL is this machine, else upload).
    labelstudio_media: str = "auto"
    #: Where curator's signed-URL media server is reached by the labelers' browsers (--media serve).
    labelstudio_media_url: str | None = None
    #: HMAC key that signs media URLs (--media serve); never logged.
    labelstudio_media_secret: str | None = dataclasses.field(default=None, repr=False)
    #: Seconds a signed media URL stays valid (a push signs; push again to renew).
    labelstudio_media_ttl: float = 7 * 24 * 3600.0
    #: Where the compute part of each step runs: "local" (this process) or "ray" (a Ray cluster).
    executor: str = "local"
    #: The Ray cluster (host:port, ray://host:port or auto); unset starts or joins a local one.
    ray_address: str | None = None
    #: Shards (of curator.executors.SHARD_SIZE images) per model-actor call.
    ray_batch_size: int = 1
    #: Model actors in the Ray pool (each loads the model once).
    ray_concurrency: int = 2
    #: CPUs and GPUs each model actor reserves.
    ray_num_cpus: float = 1.0
    ray_num_gpus: float = 0.0
    #: The self-supervised encoder of a dataset is trained again only once the pool has grown by
    #: this share since it was trained (curator.selfsupervised_store.needs_refresh).
    ssl_refresh_share: float = 0.2
    config_file: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "workspace", Path(self.workspace).expanduser())
        for name, kind, low in (("labelstudio_timeout", float, 0.0), ("labelstudio_connect_timeout", float, 0.0),
                                ("labelstudio_retries", int, -1), ("ray_batch_size", int, 0),
                                ("labelstudio_parallel", int, -1),
                                ("labelstudio_media_ttl", float, 0.0),
                                ("ray_concurrency", int, 0), ("ray_num_cpus", float, 0.0),
                                ("ray_num_gpus", float, -1.0), ("ssl_refresh_share", float, 0.0)):
            object.__setattr__(self, name, _number(name, getattr(self, name), kind, low))
        if self.ray_num_gpus < 0:
            raise ValidationError(f"ray_num_gpus must be a number >= 0; got {self.ray_num_gpus!r} "
                                  "(set CURATOR_RAY_NUM_GPUS or ray_num_gpus in the config file)")
        executor = str(self.executor).strip().lower()
        if executor not in EXECUTORS:
            raise ValidationError(f"executor must be one of {', '.join(EXECUTORS)}; got {self.executor!r} "
                                  "(set --executor, CURATOR_EXECUTOR or executor in the config file)")
        object.__setattr__(self, "executor", executor)
        address = self.ray_address.strip() if isinstance(self.ray_address, str) else self.ray_address
        object.__setattr__(self, "ray_address", address or None)

    @property
    def database_url(self) -> str:
        """The database URL; a SQLite file inside the workspace when none is set."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.workspace / 'curator.db').resolve()}"

    @property
    def media_dir(self) -> Path:
        """Where decoded images of IDX/NumPy sources are written as PNG files."""
        return self.workspace / "media"

    @property
    def embeddings_dir(self) -> Path:
        return self.workspace / "embeddings"

    @property
    def checkpoints_dir(self) -> Path:
        """Partial results of long steps (``curator.checkpoint``), removed when the step finishes."""
        return self.workspace / "checkpoints"

    def masked(self) -> dict[str, str]:
        """Effective values for display, with secrets and URL passwords masked."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                shown = "(unset)"
            elif f.name in SECRET_FIELDS:
                shown = mask(str(value))
            elif f.name == "db_url":
                shown = mask_url(str(value))
            else:
                shown = str(value)
            out[f.name] = shown
        out["database_url"] = mask_url(self.database_url)
        return out


def _number(name: str, value, kind, low):
    """``value`` (a number, or text from the environment) as ``kind`` above ``low``, or one clear error."""
    env = next((e for e, f in ENV.items() if f == name), None)
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise ValueError
        number = kind(str(value).strip()) if isinstance(value, str) else kind(value)
        if number != number or number in (float("inf"),) or number <= low:
            raise ValueError
    except (TypeError, ValueError):
        if name.startswith("ray_"):
            what = f"a whole number >= {int(low) + 1}" if kind is int else \
                "a number >= 0" if low < 0 else f"a number > {low:g}"
        elif name == "ssl_refresh_share":
            what = "a share of the pool > 0 (0.2 = 20 %)"
        else:
            what = "a number of seconds > 0" if kind is float else "a whole number >= 0"
        raise ValidationError(
            f"{name} must be {what}; got {value!r} (set {env} or {name} in the config file)"
        ) from None
    return number


def mask(secret: str) -> str:
    return "****" if len(secret) < 12 else f"{secret[:2]}****{secret[-2:]}"


def mask_url(url: str) -> str:
    """Hide the password of ``scheme://user:password@host`` URLs."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":****"
    return f"{scheme}://{creds}@{host}"


def _config_path(explicit: str | os.PathLike | None) -> Path | None:
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise ValidationError(
            f"config file {path} does not exist; create it or unset {CONFIG_ENV}"
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("curator", data)
    if not isinstance(section, dict):
        raise ValidationError(f"config file {path}: [curator] must be a table of key = value; got a "
                              f"{type(section).__name__}")
    known = {f.name for f in dataclasses.fields(Settings)} - {"config_file"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValidationError(
            f"config file {path}: unknown key(s) {', '.join(unknown)}; "
            f"known keys are {', '.join(sorted(known))}"
        )
    for key, value in section.items():
        _check_type(path, key, value)
    return section


def _check_type(path: Path, key: str, value) -> None:
    """A config value has the type of its setting's default (text where the default is a path or unset)."""
    default = next(f.default for f in dataclasses.fields(Settings) if f.name == key)
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, (int, float)):
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        ok, want = isinstance(value, str), "a string in quotes"
    if not ok:
        raise ValidationError(f"config file {path}: {key} must be {want}; got {value!r}")


def load_settings(config: str | os.PathLike | None = None, **overrides) -> Settings:
    """Resolve settings from overrides, the environment and the config file."""
    values: dict = {}
    path = _config_path(config)
    if path is not None:
        values.update(_read_config(path))
        values["config_file"] = path
    for env, field in ENV.items():
        if os.environ.get(env):
            values[field] = os.environ[env]
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "workspace" in values:
        values["workspace"] = Path(values["workspace"]).expanduser()
    return Settings(**values)


#: What curator writes in the workspace is for its user only (the Label Studio token lives there).
PRIVATE_UMASK = 0o077


@contextlib.contextmanager
def private_umask():
    """Files and folders created inside the block are 0600 / 0700 (the process umask, restored after)."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def private_workspace(workspace: str | os.PathLike) -> None:
    """Make the workspace folder 0700: created so, or tightened when it exists and is open to others.

    Only the top folder is changed: nothing below it can be reached by another user then.
    """
    path = Path(workspace)
    if not path.exists():
        with private_umask():
            path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.geteuid():
        path.chmod(stat.S_IMODE(st.st_mode) & 0o700)
