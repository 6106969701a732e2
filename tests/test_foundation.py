"""Settings, CLI contract, layering, and invariants enforced by the database itself."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from curator.exceptions import StoreError, ValidationError
from curator.settings import load_settings
from curator.store.schema import Dataset, Round, RoundItem, Sample, TaskLink
from curator.store.session import get_engine, table_names, transaction

from conftest import ROOT, SAMPLE

CLI = [sys.executable, "-m", "curator"]


def run_cli(*args, env=None, cwd=None):
    full_env = {**os.environ, "CURATOR_PROGRESS": "0", **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300)


# -- settings ---------------------------------------------------------------------------------

def test_settings_precedence_env_over_file(tmp_path, monkeypatch):
    cfg = tmp_path / "curator.toml"
    cfg.write_text('[curator]\nworkspace = "from-file"\nlabelstudio_token = "file-token-123456"\n')
    s = load_settings(cfg)
    assert s.workspace == Path("from-file") and s.labelstudio_token == "file-token-123456"
    monkeypatch.setenv("CURATOR_WORKSPACE", str(tmp_path / "env-ws"))
    monkeypatch.setenv("CURATOR_DB_URL", "postgresql+psycopg://u:secretpw@h/db")
    s = load_settings(cfg)
    assert s.workspace == tmp_path / "env-ws"
    shown = s.masked()
    assert "secretpw" not in json.dumps(shown) and "file-token-123456" not in json.dumps(shown)
    assert "file-token-123456" not in repr(s)
    assert load_settings(cfg, workspace="flag").workspace == Path("flag")


def test_settings_bad_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("workspace = [unclosed")
    with pytest.raises(ValidationError, match="not valid TOML"):
        load_settings(bad)
    bad.write_text('wrkspace = "x"')
    with pytest.raises(ValidationError, match="unknown key.*wrkspace"):
        load_settings(bad)
    with pytest.raises(ValidationError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_default_database_is_sqlite_in_workspace_with_wal(settings):
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith("ws/curator.db")
    engine = get_engine(settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert {"samples", "datasets", "rounds", "task_links", "annotations", "alembic_version"} <= set(
        table_names(engine))


def test_unreachable_database_names_url_not_password():
    with pytest.raises(StoreError, match="does not answer") as info:
        get_engine("postgresql+psycopg://someone:hunter2@127.0.0.1:1/nothing")
    assert "hunter2" not in str(info.value) and "****" in str(info.value)


# -- invariants held by the database ----------------------------------------------------------

def _dataset_with_samples(session, n=2):
    ds = Dataset(name="inv")
    session.add(ds)
    session.flush()
    ids = session.scalars(insert(Sample).returning(Sample.id), [
        {"dataset_id": ds.id, "uri": f"/x/{i}.png", "sha256": f"{i:064d}", "width": 2, "height": 2,
         "channels": 1} for i in range(n)
    ]).all()
    return ds.id, ids


def test_constraints_are_enforced_by_the_database(db_settings):
    url = db_settings.database_url
    with transaction(url) as s:
        ds, (a, b) = _dataset_with_samples(s)
        rnd = Round(dataset_id=ds, number=1, policy="random", budget=2, seed=0)
        s.add(rnd)
        s.flush()
        round_id = rnd.id
        s.add(TaskLink(sample_id=a, tool="labelstudio", project="1", task_id=10))
    cases = [
        ("same uri twice in a dataset", Sample.__table__.insert().values(
            dataset_id=ds, uri="/x/0.png", sha256="f" * 64, width=1, height=1, channels=1)),
        ("a sample pushed twice to one project", TaskLink.__table__.insert().values(
            sample_id=a, tool="labelstudio", project="1", task_id=11)),
        ("a sample of no dataset", Sample.__table__.insert().values(
            dataset_id=999, uri="/y.png", sha256="e" * 64, width=1, height=1, channels=1)),
        ("two items with one rank", RoundItem.__table__.insert(), ),
        ("bad hash", Sample.__table__.insert().values(
            dataset_id=ds, uri="/z.png", sha256="abc", width=1, height=1, channels=1)),
        ("zero budget", Round.__table__.insert().values(dataset_id=ds, number=2, policy="p", budget=0, seed=0,
                                                          status="pending")),
    ]
    for name, stmt in cases:
        with pytest.raises(IntegrityError):
            with transaction(url) as s:
                if name == "two items with one rank":
                    s.execute(stmt, [{"round_id": round_id, "sample_id": a, "rank": 0},
                                     {"round_id": round_id, "sample_id": b, "rank": 0}])
                else:
                    s.execute(stmt)
    with transaction(url) as s:
        assert s.scalar(select(Sample.id).where(Sample.uri == "/y.png")) is None
        assert len(s.scalars(select(TaskLink.id)).all()) == 1


# -- CLI contract -----------------------------------------------------------------------------

def test_import_and_help_load_no_heavy_dependencies():
    code = (
        "import sys, curator, curator.cli\n"
        "from click.testing import CliRunner\n"
        "names = [n for n in curator.cli._available()]\n"
        "r = CliRunner().invoke(curator.cli.cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "for n in names:\n"
        "    r = CliRunner().invoke(curator.cli.cli, [n, '--help'])\n"
        "    assert r.exit_code == 0, (n, r.output)\n"
        "heavy = {'torch', 'faiss', 'sqlalchemy', 'fiftyone', 'label_studio_sdk', 'alembic'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _layer(module: str) -> int:
    """Lower number = lower layer; imports must not point to a higher number."""
    parts = module.split(".")
    if parts[0] == "plugins":  # pieces that live inside other tools (FiftyOne App operators): interface
        return 5
    top = parts[1] if len(parts) > 1 else ""
    if top in ("cli", "__main__"):
        return 5
    if top in ("loop", "report", "live"):  # live: the live loop (issue 17)
        return 4
    if top == "integrations":
        return 3
    if top in ("ingest", "rounds", "versions", "embeddings", "steps", "selfsupervised_store"):
        return 2
    if top == "store":
        return 1
    return 0


CORE_FORBIDDEN = ("sqlalchemy", "fiftyone", "label_studio_sdk", "alembic")


def _module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _is_module(name: str) -> bool:
    """Whether ``name`` (dotted, e.g. curator.rounds) is a module or package of this repository."""
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _import_targets(tree: ast.AST) -> list[tuple[ast.AST, str, list[str]]]:
    """(node, module, names imported from it) of every absolute import in ``tree``; ``from curator
    import rounds`` counts as an import of ``curator.rounds`` when that is a module."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [a.name for a in node.names]
            out.append((node, node.module, names))
            out += [(node, f"{node.module}.{n}", []) for n in names if _is_module(f"{node.module}.{n}")]
        elif isinstance(node, ast.Import):
            out += [(node, a.name, []) for a in node.names]
    return out


def _sources() -> list[Path]:
    return sorted((ROOT / "curator").rglob("*.py")) + sorted((ROOT / "plugins").rglob("*.py"))


def test_imports_point_downwards():
    problems = []
    for path in _sources():
        module = _module_of(path)
        for _, target, _ in _import_targets(ast.parse(path.read_text())):
            if target.startswith("curator.") and _layer(target) > _layer(module):
                problems.append(f"{module} imports {target}")
            if _layer(module) == 0 and target.split(".")[0] in CORE_FORBIDDEN:
                problems.append(f"core module {module} imports {target}")
    assert not problems, "\n".join(problems)


#: What a module outside the store may import from SQLAlchemy: the Session type (for annotations)
#: and the exceptions. Query builders (select, update, func, text ...) and the ORM tables
#: (curator.store.schema) belong to curator/store/ (and the migrations in db/).
SQLALCHEMY_ALLOWED = {"sqlalchemy.orm": {"Session"}, "sqlalchemy.exc": None}
#: Session methods that run or stage SQL.
SESSION_CALLS = {"execute", "get", "scalar", "scalars", "add", "add_all", "delete", "query", "merge", "flush"}
#: Names a session (or connection) goes by in this code base.
SESSION_NAMES = {"s", "session", "sess", "db", "conn", "connection"}



def _query_violations(path: Path) -> list[str]:
    """Where ``path`` builds a query, imports the ORM tables or calls a session's SQL methods."""
    tree = ast.parse(path.read_text())
    out = []
    for node, target, names in _import_targets(tree):
        if target == "curator.store.schema" or target.startswith("curator.store.schema."):
            out.append(f"line {node.lineno}: imports the ORM tables ({target})")
        elif target == "sqlalchemy" or target.startswith("sqlalchemy."):
            allowed = SQLALCHEMY_ALLOWED.get(target, set())
            if isinstance(node, ast.Import) or (allowed is not None and not set(names) <= allowed):
                if _is_module(target) or target in SQLALCHEMY_ALLOWED and not names:
                    continue
                out.append(f"line {node.lineno}: imports {', '.join(names) or target} from {target}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SESSION_CALLS:
            receiver = node.func.value
            name = receiver.id if isinstance(receiver, ast.Name) else getattr(receiver, "attr", "")
            if name in SESSION_NAMES or name.endswith("session"):
                out.append(f"line {node.lineno}: calls {name}.{node.func.attr}()")
    return out


def test_no_query_outside_the_store():
    """Only curator/store/ (and the migrations) builds queries or touches ORM rows: everything else
    reads and writes through the store's functions (curator.steps runs them as read/compute/write)."""
    problems = []
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        if not rel.startswith("curator/store/"):
            problems += [f"{rel} {v}" for v in _query_violations(path)]
    assert not problems, "\n".join(problems)


def test_query_rule_catches_a_new_violation(tmp_path):
    """The rule above fails on each kind of violation (so it cannot pass by checking nothing)."""
    cases = {
        "from sqlalchemy import select\n": "imports select",
        "from sqlalchemy import func as f\n": "imports func",
        "import sqlalchemy\n": "imports sqlalchemy",
        "from curator.store.schema import Sample\n": "ORM tables",
        "from curator.store import schema\n": "ORM tables",
        "def f(session):\n    return session.execute(1)\n": "session.execute",
        "def f(s):\n    s.add(1)\n": "s.add",
        "def f(self):\n    return self.session.scalars(1)\n": "session.scalars",
    }
    for code, expected in cases.items():
        path = tmp_path / "mod.py"
        path.write_text(code)
        found = _query_violations(path)
        assert any(expected in v for v in found), (code, found)
    path.write_text("from sqlalchemy.orm import Session\nfrom sqlalchemy.exc import IntegrityError\n"
                    "from curator import rounds\nfrom curator.store import samples\n"
                    "def f(d):\n    return d.get(1)\n")
    assert _query_violations(path) == []


def test_from_curator_import_counts_as_an_import():
    """``from curator import loop`` inside a workflow module is an upward import."""
    tree = ast.parse("from curator import loop, Pool\n")
    targets = [t for _, t, _ in _import_targets(tree)]
    assert "curator.loop" in targets and "curator.Pool" not in targets
    assert _layer("curator.loop") > _layer("curator.rounds") and _layer("plugins.fiftyone") == 5


def _imports(path: Path) -> list[str]:
    """Absolute modules imported anywhere in ``path`` (function-level imports too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
    return out


def test_version_labels_are_pure_and_versions_build_no_query():
    """``curator/versions/labels.py`` (arrays in, arrays out) imports no SQLAlchemy, not even
    through the store; no module of ``curator/versions/`` builds a query (they go through
    ``curator.store.versions``): none imports SQLAlchemy beyond its exceptions, nor the ORM models."""
    labels = ROOT / "curator" / "versions" / "labels.py"
    bad = [t for t in _imports(labels) if t.split(".")[0] in CORE_FORBIDDEN or t.startswith("curator.store")]
    assert not bad, f"curator/versions/labels.py imports {bad}"
    problems = []
    for path in sorted((ROOT / "curator" / "versions").glob("*.py")):
        for target in _imports(path):
            if (target.split(".")[0] == "sqlalchemy" and target != "sqlalchemy.exc") or target == "curator.store.schema":
                problems.append(f"{path.name} imports {target}")
    assert not problems, "\n".join(problems)
    code = "import sys, curator.versions.labels; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr

#: Core modules held to a shorter list than CORE_FORBIDDEN: module -> the only non-stdlib imports allowed.
ONLY = {"curator.seeds": {"numpy"}}


def test_seeds_is_core_and_imports_numpy_only():
    """Every step and executor derives its randomness from curator.seeds, so it must load anywhere."""
    for module, allowed in ONLY.items():
        path = ROOT / (module.replace(".", "/") + ".py")
        assert _layer(module) == 0
        tops = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                tops.add((node.module or "").split(".")[0] if node.level == 0 else "curator")
            elif isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
        outside = {t for t in tops if t not in sys.stdlib_module_names and t != "__future__"}
        assert outside == allowed, f"{module} imports {sorted(outside)}; only {sorted(allowed)} is allowed"
    out = subprocess.run([sys.executable, "-c", "import sys, curator.seeds; "
                          "print(sorted(m for m in ('torch', 'faiss', 'sqlalchemy', 'click') if m in sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_cli_ingest_env_settings_and_errors(tmp_path):
    env = {"CURATOR_WORKSPACE": str(tmp_path / "ws"), "CURATOR_DB_URL": f"sqlite:///{tmp_path / 'my.db'}"}
    images, labels = SAMPLE / "test-images-idx3-ubyte.gz", SAMPLE / "test-labels-idx1-ubyte.gz"
    out = run_cli("ingest", str(images), "--labels", str(labels), "--dataset", "d", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["added"] == 2007
    assert (tmp_path / "my.db").exists() and (tmp_path / "ws" / "media" / "d").is_dir()
    bad = run_cli("ingest", str(labels), "--dataset", "d", env=env)
    assert bad.returncode != 0 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert "magic number" in bad.stderr
    missing = run_cli("ingest", str(tmp_path / "nope"), "--dataset", "d", env=env)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    listed = run_cli("datasets", "--json", env=env)
    assert json.loads(listed.stdout)[0]["samples"] == 2007
    shown = run_cli("config", "--json", env={**env, "CURATOR_LABELSTUDIO_TOKEN": "tok-abcdef-123456"})
    assert "tok-abcdef-123456" not in shown.stdout and json.loads(shown.stdout)["workspace"] == str(tmp_path / "ws")
    version = run_cli("--version")
    assert version.returncode == 0 and "curator" in version.stdout


def test_cli_unreachable_database_exits_nonzero(tmp_path):
    out = run_cli("datasets", env={"CURATOR_DB_URL": "postgresql+psycopg://u:pw@127.0.0.1:1/x"})
    assert out.returncode == 5 and "does not answer" in out.stderr and ":pw@" not in out.stderr
