"""Installed, not cloned: build the wheel, install it into a fresh virtual environment outside
the checkout, and run the tool there from a temporary folder.

Why this way: a checkout hides what the wheel lacks (migrations, sample data, the App plugin
were all read from the repository's folders). The fresh environment reuses this interpreter's
installed dependencies through a ``.pth`` line (installing torch again would take minutes and
the network), so only curator itself comes from the wheel; every run asserts that.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "curator", "db", "datasets", "plugins")

pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    """This environment without anything that points at the checkout or its settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CURATOR_", "PYTHON", "VIRTUAL_ENV", "FIFTYONE_"))}
    env.update(PYTHONNOUSERSITE="1", HOME=str(home), FIFTYONE_DO_NOT_TRACK="true")
    return env


def _run(args, cwd: Path, env, timeout=600) -> subprocess.CompletedProcess:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, its site-packages, the wheel, env): curator installed from a freshly built wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    src.mkdir()
    for name in SOURCES:
        s = ROOT / name
        if s.is_dir():
            shutil.copytree(s, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".curator"))
        else:
            shutil.copy2(s, src / name)
    env = _env(tmp)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", str(tmp / "dist"), str(src)], tmp, env)
    wheel, = (tmp / "dist").glob("curator_loop-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    py = venv / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        tmp, env).stdout.strip())
    # The project's dependencies, after the venv's own site-packages on sys.path (a .pth line
    # adds a folder; .pth files inside it, such as an editable install's finder, are not run).
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "zz_project_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], tmp, env)
    return py, purelib, wheel, env


def test_wheel_holds_the_runtime_data(installed):
    _, _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("curator/_data/db/env.py", "curator/_data/db/script.py.mako",
                     "curator/_data/mnist1989/train-images-idx3-ubyte.gz",
                     "curator/_data/fiftyone_plugin/fiftyone.yml", "curator/_data/fiftyone_plugin/__init__.py"):
        assert required in names, f"{required} missing from {wheel.name}"
    migrations = {n.rsplit("/", 1)[-1] for n in names if n.startswith("curator/_data/db/versions/")}
    assert migrations == {p.name for p in (ROOT / "db" / "versions").glob("*.py")}
    assert not any("screenshots" in n or "__pycache__" in n for n in names)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "Name: curator-loop" in zipfile.ZipFile(wheel).read(meta).decode()


def test_installed_package_is_imported_and_finds_its_data(installed, tmp_path):
    py, purelib, _, env = installed
    probe = (
        "import json, curator, curator._resources as r, importlib.metadata as md\n"
        "from curator.store.session import MIGRATIONS_DIR\n"
        "from curator.integrations.fiftyone.app import PLUGIN_SOURCE\n"
        "from curator.cli.demo import SAMPLE\n"
        "dist = md.distribution('curator-loop')\n"
        "print(json.dumps({'curator': curator.__file__, 'db': str(MIGRATIONS_DIR), 'plugin': str(PLUGIN_SOURCE),\n"
        "  'sample': str(SAMPLE), 'dist': str(dist.locate_file('')),\n"
        "  'script': [e.value for e in dist.entry_points if e.group == 'console_scripts']}))\n"
    )
    doc = json.loads(_run([str(py), "-c", probe], tmp_path, env).stdout)
    for key in ("curator", "db", "plugin", "sample"):
        assert Path(doc[key]).is_relative_to(purelib / "curator"), (key, doc[key])
        assert not Path(doc[key]).is_relative_to(ROOT)
    assert (Path(doc["plugin"]) / "fiftyone.yml").read_text() == (ROOT / "plugins/fiftyone/fiftyone.yml").read_text()
    assert (Path(doc["plugin"]) / "__init__.py").is_file()
    assert Path(doc["dist"]) == purelib and doc["script"] == ["curator.cli:main"]


def test_installed_ingest_and_demo_run_outside_the_checkout(installed, tmp_path):
    from PIL import Image

    py, _, _, env = installed
    curator = py.parent / "curator"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "pics" / cls / f"{i}.png")
    run = tmp_path / "run"
    run.mkdir()
    out = _run([str(curator), "ingest", str(tmp_path / "pics"), "-d", "pets", "--json"], run, env)
    assert json.loads(out.stdout)["added"] == 6  # a new SQLite database: the migrations were found
    assert (run / ".curator" / "curator.db").is_file()

    out = _run([str(curator), "demo", "--rounds", "1", "--budget", "10", "--no-baseline", "--labeler", "oracle"],
               run, env)
    assert "ingest train: 7291 added" in out.stdout and "ingest test: 2007 added" in out.stdout
    assert "30 labels: test error" in out.stdout
    assert "Traceback" not in out.stderr
