"""Shared fixtures: an isolated workspace per test, on SQLite and on PostgreSQL.

PostgreSQL tests use ``CURATOR_TEST_PG_URL`` (a server URL whose role may
create databases); each test gets a fresh database that is dropped afterwards.
Without the variable they are skipped with a message saying how to enable
them; in CI (``CI=true``) a missing server is an error, not a skip.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from curator.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
MNIST = SHARED / "mnist"
SAMPLE = ROOT / "datasets" / "mnist1989"
PG_ENV = "CURATOR_TEST_PG_URL"
PG_HINT = (
    f"PostgreSQL tests skipped: set {PG_ENV}=postgresql+psycopg://user:password@127.0.0.1/postgres "
    "(a role that may create databases), or run `make test`, which starts a local server"
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the user's config or writes outside its temporary folder."""
    for var in ("CURATOR_DB_URL", "CURATOR_WORKSPACE", "CURATOR_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CURATOR_PROGRESS", "0")
    monkeypatch.chdir(tmp_path)


def pytest_configure(config):
    config.addinivalue_line("markers", "empty_database: db_settings' PostgreSQL database starts with no schema "
                                       "(for tests of the migrations themselves)")


def _pg_database(base_url: str, template: str | None = None):
    """Create a fresh database on the server of ``base_url`` (a copy of ``template`` if named); return (url, drop)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"curator_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)

    def drop():
        from curator.store.session import dispose_all

        dispose_all()
        drop_database(admin, name)
        admin.dispose()

    return url, drop


def drop_database(admin, name: str) -> None:
    """DROP DATABASE ``name`` WITH (FORCE) through the AUTOCOMMIT engine ``admin``, retried briefly.

    FORCE may meet a server process the test role may not signal (an autovacuum worker working on
    the database; tests/services.sh grants pg_signal_backend, a server given by URL may not): that
    one ends by itself within moments.
    """
    import time

    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    for attempt in range(20):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except DBAPIError:
            if attempt == 19:
                raise
            time.sleep(0.5)


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Embedded default: a SQLite file in a temporary workspace."""
    from curator.store.session import dispose_all

    yield Settings(workspace=tmp_path / "ws")
    dispose_all()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_settings(request, tmp_path) -> Settings:
    """The same test on SQLite and on a fresh PostgreSQL database."""
    from curator.store.session import dispose_all

    workspace = tmp_path / "ws"
    if request.param == "sqlite":
        yield Settings(workspace=workspace)
        dispose_all()
        return
    base = os.environ.get(PG_ENV)
    if not base:
        unavailable(PG_HINT if not os.environ.get("CI") else f"{PG_ENV} is not set; .ci/run must start PostgreSQL")
    empty = request.node.get_closest_marker("empty_database") is not None
    url, drop = _pg_database(base, None if empty else request.getfixturevalue("_pg_migrated"))
    try:
        yield Settings(workspace=workspace, db_url=url)
    finally:
        drop()


@pytest.fixture(scope="session")
def _pg_migrated():
    """One PostgreSQL database migrated to head per session, the template of db_settings' databases:
    a copy is made in a fraction of the time the migrations take (about a second each on a loaded
    2-core machine, times some 300 tests). What the migrations do is tested on databases that start
    empty (marker ``empty_database``) and by every SQLite test."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from curator.store.session import upgrade

    url, drop = _pg_database(os.environ[PG_ENV])
    engine = create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()  # a template database must have no open connections
    try:
        yield make_url(url).database
    finally:
        drop()


def unavailable(reason: str):
    """Skip a test whose service or data is missing here; in CI (``CI`` set) fail instead,
    since `.ci/run` provides everything and a skip there would hide a broken set-up."""
    if not os.environ.get("CI"):
        pytest.skip(reason)
    pytest.fail(f"in CI: {reason}")


def require(path: Path) -> Path:
    if not path.exists():
        unavailable(f"{path} is missing; the real datasets live in ../shared/datasets (see its README)")
    return path


@pytest.fixture(scope="session")
def fiftyone_db(tmp_path_factory):
    """One private mongod for the whole test session (FiftyOne's own service is shared
    machine-wide); FiftyOne offline and never touching ~/.fiftyone. Yields its environment."""
    import importlib.util

    if importlib.util.find_spec("fiftyone") is None:
        unavailable("fiftyone is not installed: pip install 'curator-loop[fiftyone]'")
    from curator.integrations.fiftyone.isolated import private_database

    with private_database(tmp_path_factory.mktemp("fiftyone")) as env:
        yield env


RAY_ENV = "CURATOR_TEST_RAY_ADDRESS"


@pytest.fixture(scope="session")
def ray_address():
    """The address of the two-node Ray test cluster (``tests/services.sh`` starts it for `make test`).
    Skipped here without it; in CI a missing cluster fails."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        unavailable("ray is not installed: pip install 'curator-loop[ray]'")
    address = os.environ.get(RAY_ENV)
    if not address:
        unavailable(f"Ray cluster tests skipped: set {RAY_ENV}=host:port of a running cluster, "
                    "or run `make test`, which starts a two-node one on 127.0.0.1")
    return address


# Label Studio (issue 6): one real server per test session; see tests/ls_fixtures.py.
from ls_fixtures import ls_round, ls_server, ls_settings, small_idx  # noqa: E402,F401

# Bad-input corpus (issue 13): the `sandbox` fixture and `refused()`; see tests/badinput.py.
from badinput import sandbox  # noqa: E402,F401
