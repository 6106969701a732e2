"""Your own model everywhere (issue 15 item 2): one ``--model SPEC`` (+ ``--weights``) in score,
select, embed, dedup and loop; ``module:factory``, an entry point (a real dist-info folder), a
TorchScript file; the spec recorded with the model row (``--model <id>`` rebuilds it); a fit hook
trains a user model in the loop, else it is used frozen; bad specs are one line each."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

import torch  # a core dependency
from conftest import SAMPLE, require
from curator.exceptions import CuratorError, ValidationError
from curator.store.schema import Model, Round
from curator.store.session import transaction

DS = "own"

USER_SRC = '''
import numpy as np
import torch
import torch.nn as nn


class Net(nn.Module):
    """A tiny digit classifier with dropout; declares its input."""
    input_spec = {"size": (16, 16), "channels": 1}

    def __init__(self, classes=10):
        super().__init__()
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(256, 24)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(24, classes)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(self.flat(x)))))


class Plain(nn.Module):
    """No dropout: MC samples are refused."""
    input_spec = {"size": (16, 16), "channels": 1}

    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(256, 12)
        self.fc2 = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.flat(x))))


def make():
    return Net()


def make_plain():
    return Plain()


def make_narrow():
    return Net(classes=3)


def broken():
    raise RuntimeError("weights server unreachable")


def fit(model, images, labels, *, classes, seed):
    """The training hook: the loop calls it with the labels of each round."""
    x = torch.tensor(np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images]))[:, None]
    y = torch.as_tensor(labels)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
'''

#: A plugin package without the fit hook: registered through a real dist-info entry point.
PLUGIN_SRC = '''
import torch.nn as nn


class Tiny(nn.Module):
    input_spec = {"size": (16, 16), "channels": 1}

    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(256, 8)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc2(self.drop(self.fc1(self.flat(x))))


def tiny(classes=None):
    return Tiny()
'''


def _write_modules(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "ownmods.py").write_text(textwrap.dedent(USER_SRC))
    (root / "ownplug.py").write_text(textwrap.dedent(PLUGIN_SRC))
    dist = root / "ownplug-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ownplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[curator.models]\ntinyplug = ownplug:tiny\n")
    return root


@pytest.fixture
def user_path(tmp_path, monkeypatch):
    """The user's modules and a plugin's dist-info on sys.path (for CliRunner) and PYTHONPATH (subprocesses)."""
    from curator.models import spec as model_spec

    root = _write_modules(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    for name in ("ownmods", "ownplug"):
        sys.modules.pop(name, None)
    model_spec.rescan()
    yield root
    for name in ("ownmods", "ownplug"):
        sys.modules.pop(name, None)
    monkeypatch.undo()
    model_spec.rescan()


def _ingest(settings, n_train=60, n_test=30, name=DS):
    from curator.ingest import ingest_arrays
    from curator.ingest.idx import iter_images, read_labels

    require(SAMPLE)
    for split, n in (("train", n_train), ("test", n_test)):
        _, images = next(iter_images(SAMPLE / f"{split}-images-idx3-ubyte.gz", batch_size=n))
        labels = read_labels(SAMPLE / f"{split}-labels-idx1-ubyte.gz")[:n]
        ingest_arrays(np.asarray(images), labels, dataset=name, split=split, name=split, settings=settings)


def _cli(settings, monkeypatch):
    from curator.cli import cli

    monkeypatch.setenv("CURATOR_WORKSPACE", str(settings.workspace))
    if settings.db_url:
        monkeypatch.setenv("CURATOR_DB_URL", settings.db_url)
    else:
        monkeypatch.delenv("CURATOR_DB_URL", raising=False)
    return lambda *argv: CliRunner().invoke(cli, list(argv))


def _rows(settings):
    with transaction(settings) as s:
        return {i: (n, p) for i, n, p in s.execute(select(Model.id, Model.name, Model.params))}


def _one_line(res, *needles):
    """A refusal: a CuratorError (one line `error: ...` from main) naming each needle."""
    assert res.exit_code != 0 and isinstance(res.exception, CuratorError), (res.output, res.exception)
    msg = str(res.exception)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


@pytest.mark.slow
def test_factory_spec_in_select_score_embed_dedup_recorded_and_rebuilt_by_id(db_settings, user_path, monkeypatch,
                                                                             tmp_path):
    _ingest(db_settings)
    run = _cli(db_settings, monkeypatch)

    res = run("select", "-d", DS, "-n", "4", "--model", "ownmods:make", "--policy", "entropy", "--split", "train",
              "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    mid = out["model_id"]
    name, params = _rows(db_settings)[mid]
    assert params["spec"]["kind"] == "factory" and params["spec"]["target"] == "ownmods:make"
    assert params["spec"]["options"]["classes"] == [str(i) for i in range(10)] and params["weights_sha256"] is None
    with transaction(db_settings) as s:
        assert s.scalar(select(Round.model_id).where(Round.number == out["round"])) == mid

    # a later command names the model by its id: rebuilt from the recorded spec, the same row
    res = run("score", "-d", DS, "--model", str(mid), "--split", "train", "--json")
    assert res.exit_code == 0, res.output
    scored = json.loads(res.output)
    assert scored["model_id"] == mid and "bald" in scored["scores"]  # the model has dropout: MC by default

    # --weights: a state_dict file, its sha256 recorded; a changed file no longer matches the id
    sys.path.insert(0, str(user_path))
    import ownmods

    net = ownmods.make()
    with torch.no_grad():
        net.fc2.bias += 1.0
    weights = tmp_path / "w.pt"
    torch.save(net.state_dict(), weights)
    res = run("embed", "-d", DS, "--model", "ownmods:make", "--weights", str(weights), "--json")
    assert res.exit_code == 0, res.output
    emb = json.loads(res.output)
    assert emb["count"] == 90 and emb["done"] == 90 and emb["model_id"] != mid
    import hashlib

    assert _rows(db_settings)[emb["model_id"]][1]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    res = run("dedup", "-d", DS, "--model", "ownmods:make", "--weights", str(weights), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["embedding"] == "model ownmods:make"

    with torch.no_grad():
        net.fc2.bias += 1.0
    torch.save(net.state_dict(), weights)
    _one_line(run("score", "-d", DS, "--model", str(emb["model_id"])), "no longer matches its recorded weights")
    _one_line(run("score", "-d", DS, "--model", str(mid), "--weights", str(weights)), "--weights")


@pytest.mark.slow
def test_model_without_dropout_mc_default_drops_asked_mc_is_one_line(settings, user_path, monkeypatch):
    _ingest(settings, n_test=5)
    run = _cli(settings, monkeypatch)

    res = run("select", "-d", DS, "-n", "3", "--model", "ownmods:make_plain", "--policy", "margin", "--json")
    assert res.exit_code == 0, res.output  # the default --mc 20 drops to 0: margin needs no MC samples
    _one_line(run("select", "-d", DS, "-n", "3", "--model", "ownmods:make_plain", "--policy", "bald"),
              "policy 'bald' needs MC-dropout samples", "no dropout")
    _one_line(run("score", "-d", DS, "--model", "ownmods:make_plain", "--mc", "5"), "--mc 5", "no dropout")


@pytest.mark.slow
def test_torchscript_file_in_score_and_select(settings, user_path, tmp_path, monkeypatch):
    _ingest(settings, n_test=5)
    run = _cli(settings, monkeypatch)
    sys.path.insert(0, str(user_path))
    import ownmods

    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(ownmods.make().eval()), str(path), _extra_files={"curator.json": json.dumps(
        {"input_spec": {"size": [16, 16], "channels": 1}, "classes": [str(i) for i in range(10)]})})
    # TorchScript hides layers from hooks: the embedding comes from forward's features via an exported method
    res = run("score", "-d", DS, "--model", str(path), "--mc", "0", "--json")
    _one_line(res, "embed")  # this module exports no embed method: one line naming the fix

    class WithEmbed(type(ownmods.make())):
        @torch.jit.export
        def embed(self, x):
            return torch.relu(self.fc1(self.flat(x)))

    torch.jit.save(torch.jit.script(WithEmbed().eval()), str(path), _extra_files={"curator.json": json.dumps(
        {"input_spec": {"size": [16, 16], "channels": 1}, "classes": [str(i) for i in range(10)]})})
    res = run("score", "-d", DS, "--model", str(path), "--mc", "3", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["pool"] == 65 and "bald" in out["scores"]
    spec = _rows(settings)[out["model_id"]][1]["spec"]
    assert spec["kind"] == "torchscript" and spec["target"] == str(path.resolve())
    res = run("select", "-d", DS, "-n", "5", "--model", str(path), "--policy", "curator", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["model_id"] == out["model_id"] and len(json.loads(res.output)["sample_ids"]) == 5


@pytest.mark.slow
def test_bad_specs_each_one_line_and_nothing_recorded(settings, user_path, tmp_path, monkeypatch):
    _ingest(settings, n_train=20, n_test=5)
    run = _cli(settings, monkeypatch)
    sys.path.insert(0, str(user_path))
    import ownmods

    pickled = tmp_path / "whole.pt"
    torch.save(ownmods.make(), pickled)  # a pickled nn.Module: loading it would run code
    before = _rows(settings)
    cases = [
        (["--model", "nosuchpkg.models:make"], ["cannot import nosuchpkg", "no module named 'nosuchpkg'"]),
        (["--model", "ownmods:broken"], ["factory raised RuntimeError", "weights server unreachable"]),
        (["--model", "ownmods:make_narrow"], ["3 class probabilities but 10 classes"]),
        (["--model", str(pickled)], ["pickled Python objects", "torch.jit.save"]),
        (["--model", "ownmods:nothere"], ["has no attribute 'nothere'"]),
        (["--model", "ownmods:make", "--weights", str(tmp_path / "none.pt")], ["none.pt does not exist"]),
    ]
    for extra, needles in cases:
        _one_line(run("select", "-d", DS, "-n", "2", "--policy", "entropy", "--mc", "0", *extra), *needles)
    after = _rows(settings)
    assert set(after) - set(before) <= {i for i, (n, _) in after.items() if n == "ownmods:make_narrow"}
    with transaction(settings) as s:
        assert s.scalar(select(Round.id)) is None  # no round recorded by any refusal


def _subprocess(args, cwd, env):
    return subprocess.run([sys.executable, "-m", "curator", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env={**env, "CURATOR_PROGRESS": "0"})


@pytest.mark.slow
def test_entry_point_model_in_select_and_loop_used_frozen(tmp_path, user_path):
    """A plugin registered by a real dist-info folder (entry point group curator.models) on PYTHONPATH."""
    from curator.settings import Settings

    ws = tmp_path / "ws"
    env = {**os.environ, "CURATOR_WORKSPACE": str(ws)}
    env.pop("CURATOR_DB_URL", None)
    settings = Settings(workspace=ws)
    _ingest(settings, n_train=60, n_test=20)
    _ingest(settings, n_train=60, n_test=20, name="ownloop")

    r = _subprocess(["select", "-d", DS, "-n", "3", "--model", "tinyplug", "--policy", "entropy", "--json"],
                    tmp_path, env)
    assert r.returncode == 0, r.stderr
    mid = json.loads(r.stdout)["model_id"]
    assert _rows(settings)[mid][1]["spec"] == {"kind": "registered", "target": "tinyplug", "weights": None,
                                                "options": {"classes": [str(i) for i in range(10)]}}

    r = _subprocess(["loop", "-d", "ownloop", "--model", "tinyplug", "--rounds", "1", "--budget", "4", "--initial", "10",
                     "--subsample", "0", "--policy", "entropy"], tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert "no training hook" in r.stdout and "uses it frozen" in r.stdout
    with transaction(settings) as s:
        used = set(s.scalars(select(Round.model_id).where(Round.number >= 1, Round.params.is_not(None))))
    assert used == {mid}  # frozen: every round of both datasets scored by the same model row

    bad = _subprocess(["select", "-d", DS, "-n", "3", "--model", "tinyplg"], tmp_path, env)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "tinyplug" in bad.stderr  # the close name


@pytest.mark.slow
def test_factory_with_fit_hook_trains_in_the_loop(settings, user_path, monkeypatch):
    _ingest(settings, n_train=80, n_test=40)
    run = _cli(settings, monkeypatch)
    res = run("loop", "-d", DS, "--model", "ownmods:make", "--rounds", "2", "--budget", "6", "--initial", "12",
              "--subsample", "0", "--policy", "entropy")
    assert res.exit_code == 0, res.output
    assert "trained on each round's labels by its fit hook" in res.output
    trained = {i: p for i, (n, p) in _rows(settings).items() if (p or {}).get("trained_by") == "fit hook"}
    assert sorted(p["n_labels"] for p in trained.values()) == [12, 18, 24]
    for p in trained.values():  # each trained model names its own weights file, so --model <id> rebuilds it
        assert p["spec"]["weights"].endswith(".state.pt") and os.path.isfile(p["spec"]["weights"])
    with transaction(settings) as s:
        used = list(s.scalars(select(Round.model_id).where(Round.number >= 1).order_by(Round.number)))
    assert len(used) == 2 and set(used) <= set(trained)
    res = run("score", "-d", DS, "--model", str(max(trained)), "--mc", "0", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["model_id"] == max(trained)


def test_model_spec_ships_to_executors_pickled(tmp_path, user_path):
    """What a step ships to a worker: a pickled ModelSpec that builds the same model there."""
    from PIL import Image

    from curator.executors import LocalExecutor
    from curator.models import ModelSpec

    uris = []
    rng = np.random.default_rng(0)
    for i in range(5):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(p)
        uris.append(str(p))
    spec = ModelSpec.parse("ownmods:make", classes=[str(i) for i in range(10)])
    shipped = pickle.loads(pickle.dumps(spec))
    a = LocalExecutor().predict(uris, shipped, mc_samples=3, seed=1, round=1)
    b = LocalExecutor().predict(uris, None, mc_samples=3, seed=1, round=1, adapter=spec.load())
    assert np.allclose(a.probs, b.probs) and np.allclose(a.mc_probs, b.mc_probs)
    with pytest.raises(ValidationError, match="pass the model"):
        LocalExecutor().predict(uris, None, mc_samples=0, seed=0, round=0)


class _Scripted(torch.nn.Module):
    """A TorchScript-able digit model with dropout and an exported embedding."""

    def __init__(self):
        super().__init__()
        self.flat = torch.nn.Flatten()
        self.fc1 = torch.nn.Linear(256, 16)
        self.drop = torch.nn.Dropout(0.3)
        self.fc2 = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(self.flat(x)))))

    @torch.jit.export
    def embed(self, x):
        return torch.relu(self.fc1(self.flat(x)))


@pytest.mark.slow
def test_ray_ships_the_model_spec_and_equals_local(ray_address, tmp_path, monkeypatch):
    """A TorchScript model given by spec: Ray's model actors build it from the pickled ModelSpec
    (no .pt of the built-in CNN involved) and give the local answer, shard for shard."""
    import ray
    from PIL import Image

    from curator import executors as ex
    from curator.models import ModelSpec

    monkeypatch.setattr(ex, "SHARD_SIZE", 16)
    rng = np.random.default_rng(3)
    uris = []
    for i in range(40):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(p)
        uris.append(str(p))
    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(_Scripted().eval()), str(path), _extra_files={"curator.json": json.dumps(
        {"input_spec": {"size": [16, 16], "channels": 1}, "classes": [str(i) for i in range(10)]})})
    spec = ModelSpec.parse(str(path))
    want = ex.LocalExecutor().predict(uris, spec, mc_samples=3, seed=5, round=2)
    executor = ex.get_executor("ray", address=ray_address, concurrency=2, num_cpus=1, batch_size=1)
    try:
        got = executor.predict(uris, spec, mc_samples=3, seed=5, round=2)
    finally:
        ray.shutdown()
    np.testing.assert_allclose(got.probs, want.probs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.embeddings, want.embeddings, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.mc_probs, want.mc_probs, rtol=0, atol=1e-5)


def test_embedding_rows_written_in_place_by_position_and_wrong_width_refused(tmp_path):
    """compute_embeddings writes each batch with a positioned write (no map held for the whole set,
    so its resident memory stays one batch): rows land at their offset, the rest is untouched, and
    rows of another width are refused before anything is written."""
    from curator.embeddings import write_rows

    path = tmp_path / "1-1.f32"
    np.memmap(path, dtype=np.float32, mode="w+", shape=(10, 3)).flush()
    rows = np.arange(6, dtype=np.float64).reshape(2, 3)  # float64 in: stored as float32
    write_rows(path, 4, rows, 3)
    got = np.fromfile(path, dtype=np.float32).reshape(10, 3)
    assert np.array_equal(got[4:6], rows.astype(np.float32))
    assert not got[:4].any() and not got[6:].any()
    with pytest.raises(ValidationError, match="do not fit the 3-d set"):
        write_rows(path, 0, np.ones((2, 4), np.float32), 3)
    assert np.array_equal(np.fromfile(path, dtype=np.float32).reshape(10, 3), got)
