"""One model spec (built-in CNN, module:factory, TorchScript, entry point), the declared input
transform, the conformance check, and a clear answer when MC dropout meets a model without dropout."""

from __future__ import annotations

import pickle
import sys
import textwrap

import numpy as np
import pytest

import torch  # a core dependency: missing torch must fail, never skip
from curator.exceptions import NotFoundError, ValidationError
from curator.models import (CNNAdapter, InputSpec, ModelSpec, Predictions, ScriptAdapter, TorchAdapter, check_model,
                            resolve_model)
from curator.models import spec as model_spec

USER_SRC = '''
import torch
import torch.nn as nn

class Net(nn.Module):
    """A tiny RGB classifier with dropout; declares its input."""
    input_spec = {"size": (16, 16), "channels": 3, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}

    def __init__(self, classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc1 = nn.Linear(16, 8)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(self.body(x)))))

    @torch.jit.export
    def embed(self, x):
        return torch.relu(self.fc1(self.body(x)))


class NoDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16 * 16, 4)

    def forward(self, x):
        return self.fc(self.flat(x))


def make():
    return Net()

def make_plain():
    return NoDropout()

def broken():
    raise RuntimeError("GPU weights not found")

def not_a_module():
    return "resnet"

CONSTANT = 3
'''


@pytest.fixture
def usermod(tmp_path, monkeypatch):
    """An importable user package ``usermodels_t`` (a module on sys.path, as pip would leave it)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "usermodels_t.py").write_text(USER_SRC)
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop("usermodels_t", None)
    yield site
    sys.modules.pop("usermodels_t", None)


def rgb(n=5, size=(16, 16), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *size, 3), dtype=np.uint8)


# -- the declared input transform ---------------------------------------------------------------

def test_input_spec_converts_channels_resizes_and_normalises():
    spec = InputSpec(size=(8, 8), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    white = np.full((2, 10, 12), 255, dtype=np.uint8)  # grayscale, another size
    x = spec.to_tensor(white)
    assert tuple(x.shape) == (2, 3, 8, 8)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))  # (1 - 0.5) / std per channel

    gray = InputSpec(channels=1)
    red = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert torch.allclose(gray.to_tensor(red), torch.full((1, 1, 4, 4), 0.299), atol=1e-6)
    rgba = np.concatenate([red, np.zeros((1, 4, 4, 1), dtype=np.uint8)], -1)  # alpha dropped
    assert torch.equal(InputSpec(channels=3).to_tensor(rgba), InputSpec(channels=3).to_tensor(red))

    mixed = [np.zeros((5, 7), np.uint8), np.zeros((9, 4, 3), np.uint8), np.zeros((6, 6, 4), np.uint8)]
    assert tuple(spec.to_tensor(mixed).shape) == (3, 3, 8, 8)
    with pytest.raises(ValidationError, match="declared input size"):
        InputSpec(channels=3).to_tensor(mixed)
    floats = np.random.default_rng(0).normal(size=(2, 3, 5, 5)).astype(np.float32)
    assert torch.equal(spec.to_tensor(floats), torch.from_numpy(floats))  # prepared tensors pass as they are
    assert InputSpec().to_tensor(rgba).shape[1] == 4  # nothing declared: nothing dropped
    for bad in (dict(channels=2), dict(size=(0, 8)), dict(channels=3, mean=(0.1, 0.2)), dict(std=(0.0,)),
                dict(mean=(0.5, 0.5, 0.5))):
        with pytest.raises(ValidationError, match="input spec"):
            InputSpec(**bad)


# -- each spec kind -----------------------------------------------------------------------------

def test_builtin_cnn_by_name_and_by_file(tmp_path):
    fresh = resolve_model("smallcnn", classes=["cat", "dog"], device="cpu")
    assert isinstance(fresh, CNNAdapter) and fresh.classes == ["cat", "dog"]
    assert fresh.version == resolve_model("smallcnn", classes=["cat", "dog"], device="cpu").version  # seeded
    assert fresh.input_spec.channels == 1
    path = fresh.save(tmp_path / "m.pt")
    spec = ModelSpec.parse(str(path))
    assert spec.kind == "file"
    loaded = pickle.loads(pickle.dumps(spec)).load(device="cpu")  # what an executor ships to workers
    assert loaded.version == fresh.version and loaded.classes == ["cat", "dog"]
    by_weights = resolve_model("smallcnn", weights=path, device="cpu")
    assert by_weights.version == fresh.version
    check_model(loaded)
    with pytest.raises(ValidationError, match="smallcnn without weights needs its class list"):
        resolve_model("smallcnn")
    with pytest.raises(ValidationError, match="trained for classes"):
        resolve_model(path, classes=["a", "b"])


def test_module_factory_without_and_with_weights(usermod, tmp_path):
    a = resolve_model("usermodels_t:make", classes=["r", "g", "b"], device="cpu")
    assert isinstance(a, TorchAdapter) and a.feature_input and a.feature_layer == "fc2"  # input of last Linear
    assert a.input_spec == InputSpec(size=(16, 16), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    p = a.predict(rgb(4, size=(20, 30)))  # another size: resized by the declared transform
    assert p.probs.shape == (4, 3) and p.embeddings.shape == (4, 8)
    assert a.version == resolve_model("usermodels_t:make", device="cpu").version  # same init in every process
    assert check_model("usermodels_t:make", device="cpu").version == a.version  # a spec is checked as well

    import usermodels_t

    trained = usermodels_t.Net()
    with torch.no_grad():
        trained.fc2.bias.add_(5.0)
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    w = resolve_model("usermodels_t:make#fc1", weights=tmp_path / "w.pt", device="cpu")
    from curator.models.base import checksum_of

    assert w.version == checksum_of(trained)[:16] != a.version
    assert w.feature_layer == "fc1" and not w.feature_input
    spec = ModelSpec.parse("usermodels_t:make#fc1", weights=tmp_path / "w.pt")
    assert (spec.kind, spec.target, spec.options["feature_layer"]) == ("factory", "usermodels_t:make", "fc1")
    assert pickle.loads(pickle.dumps(spec)).load(device="cpu").version == w.version
    same = ModelSpec.parse("usermodels_t:make", weights=tmp_path / "w.pt", feature_layer="fc1")
    assert same == spec and len({spec, same, ModelSpec.parse("usermodels_t:make")}) == 2  # hashable: a cache key
    assert resolve_model(trained, device="cpu").version == w.version  # a module object wraps the same way


def test_a_shipped_spec_builds_the_same_model_in_another_process(usermod, tmp_path):
    """What an executor does: pickle the spec, load it in a fresh worker process."""
    import os
    import subprocess

    spec = ModelSpec.parse("usermodels_t:make", classes=["r", "g", "b"])
    (tmp_path / "spec.pkl").write_bytes(pickle.dumps(spec))
    code = ("import pickle, sys; s = pickle.load(open(sys.argv[1], 'rb')); "
            "a = s.load(device='cpu'); print(a.version, a.classes)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(usermod), *sys.path])}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "spec.pkl")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    here = spec.load(device="cpu")
    assert out.stdout.split()[0] == here.version  # factories run under a fixed seed: same untrained weights
    assert "['r', 'g', 'b']" in out.stdout


def test_torchscript_file_is_recognised_and_loaded_without_unpickling(usermod, tmp_path):
    import usermodels_t

    net = usermodels_t.Net().eval()
    for name in ("net.ts", "net.pt"):
        torch.jit.save(torch.jit.script(net), tmp_path / name)
        spec = ModelSpec.parse(tmp_path / name, classes=["a", "b", "c"])
        assert spec.kind == "torchscript"
        a = resolve_model(spec, device="cpu", input_spec=usermodels_t.Net.input_spec)
        assert isinstance(a, ScriptAdapter) and a.has_dropout
        eager = TorchAdapter(net, "fc1", input_spec=usermodels_t.Net.input_spec, device="cpu")
        images = rgb(3)
        assert np.allclose(a.predict(images).probs, eager.predict(images).probs, atol=1e-5)
        check_model(a)  # MC passes differ, and repeat for a seed

    import json

    meta = {"input_spec": usermodels_t.Net.input_spec, "classes": ["x", "y", "z"]}
    torch.jit.save(torch.jit.script(net), tmp_path / "described.ts", _extra_files={"curator.json": json.dumps(meta)})
    described = resolve_model(tmp_path / "described.ts", device="cpu")  # the file says its input and classes
    assert described.input_spec == InputSpec(size=(16, 16), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert described.classes == ["x", "y", "z"]
    torch.jit.save(torch.jit.script(net), tmp_path / "bad.ts", _extra_files={"curator.json": "{not json"})
    with pytest.raises(ValidationError, match=r"bad.ts: its curator.json is not valid"):
        resolve_model(tmp_path / "bad.ts")

    class Pair(torch.nn.Module):  # forward returns (logits, features): the other way to give an embedding
        def __init__(self):
            super().__init__()
            self.f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 5))
            self.out = torch.nn.Linear(5, 2)

        def forward(self, x):
            h = self.f(x)
            return self.out(h), h

    pair = Pair().eval()
    torch.jit.save(torch.jit.script(pair), tmp_path / "pair.ts")
    p = resolve_model(tmp_path / "pair.ts", device="cpu")
    images = np.random.default_rng(1).integers(0, 256, size=(3, 16, 16), dtype=np.uint8)
    got = p.predict(images)
    with torch.no_grad():
        logits, h = pair(torch.from_numpy(images[:, None].astype(np.float32) / 255))
    assert np.allclose(got.probs, torch.softmax(logits, 1).numpy(), atol=1e-5)
    assert np.allclose(got.embeddings, torch.nn.functional.normalize(h, dim=1).numpy(), atol=1e-5)
    assert not p.has_dropout

    torch.jit.save(torch.jit.script(usermodels_t.NoDropout()), tmp_path / "plain.ts")
    with pytest.raises(ValidationError, match=r"plain gives no embedding.*@torch.jit.export def embed"):
        resolve_model(tmp_path / "plain.ts")


ENTRY_SRC = '''
import torch.nn as nn
from curator.models import TorchAdapter

def tiny():
    return nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 6), nn.Dropout(0.3), nn.ReLU(), nn.Linear(6, 2))

def with_weights(weights=None, classes=None):
    adapter = TorchAdapter(tiny(), "1", name="with_weights", device="cpu", classes=classes)
    adapter.loaded = weights
    return adapter
'''


def _install_plugin(tmp_path, monkeypatch, dist, entries):
    """A real installed distribution: a module and a dist-info with entry_points.txt on sys.path."""
    site = tmp_path / "site_ep"
    site.mkdir(exist_ok=True)
    (site / f"{dist}_mod.py").write_text(textwrap.dedent(ENTRY_SRC))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[curator.models]\n{lines}\n")
    monkeypatch.syspath_prepend(str(site))


def test_entry_point_model_is_found_and_cannot_replace_a_builtin(tmp_path, monkeypatch):
    _install_plugin(tmp_path, monkeypatch, "curator_model_demo",
                    {"tiny": "curator_model_demo_mod:tiny", "tiny_w": "curator_model_demo_mod:with_weights"})
    model_spec.rescan()
    try:
        assert {"smallcnn", "tiny", "tiny_w"} <= set(model_spec.available())
        assert "entry point tiny" in model_spec.origin("tiny")
        spec = ModelSpec.parse("tiny", classes=["yes", "no"])
        assert spec.kind == "registered"
        a = pickle.loads(pickle.dumps(spec)).load(device="cpu")
        assert isinstance(a, TorchAdapter) and a.classes == ["yes", "no"] and a.feature_layer == "4"
        assert a.predict(np.zeros((3, 16, 16), np.uint8)).probs.shape == (3, 2)
        with pytest.raises(ValidationError, match=r"declares no input size; pass size=\(H, W\)"):
            check_model(a)  # 32 x 32 by default: a 16 x 16 model must say so
        check_model(a, size=(16, 16))
        b = resolve_model("tiny_w", weights="/some/weights.bin", classes=["x", "y"])  # the factory takes weights
        assert b.loaded == "/some/weights.bin" and b.classes == ["x", "y"]
        with pytest.raises(NotFoundError, match=r"did you mean 'tiny'.*package.module:factory"):
            resolve_model("tinny")
    finally:
        for name in ("tiny", "tiny_w"):
            model_spec.unregister(name)
        sys.modules.pop("curator_model_demo_mod", None)

    (tmp_path / "evil").mkdir()
    _install_plugin(tmp_path / "evil", monkeypatch, "curator_model_evil", {"smallcnn": "curator_model_evil_mod:tiny"})
    with pytest.raises(ValidationError, match=r"cannot replace the built-in model 'smallcnn'"):
        model_spec.rescan()
    with pytest.raises(ValidationError, match="cannot replace the built-in model 'smallcnn'"):
        model_spec.register("smallcnn")(lambda: None)
    monkeypatch.undo()
    model_spec.rescan()
    assert isinstance(resolve_model("smallcnn", classes=[0, 1], device="cpu"), CNNAdapter)


# -- bad specs: one clear error each, naming the spec and the fix ---------------------------------

def test_bad_specs_each_get_one_clear_error(usermod, tmp_path):
    import usermodels_t

    cases = [
        ("no_such_pkg.models:make", {}, r"no_such_pkg.models:make: cannot import no_such_pkg.models.*install"),
        ("usermodels_t:nothing", {}, r"usermodels_t has no attribute 'nothing'; it has: .*make"),
        ("usermodels_t:broken", {}, r"usermodels_t:broken: the factory raised RuntimeError: GPU weights not "
                                    r"found; fix the factory"),
        ("usermodels_t:not_a_module", {}, r"returned str, not a torch.nn.Module"),
        ("usermodels_t:CONSTANT", {}, r"usermodels_t:CONSTANT is a int, not a factory"),
        ("usermodels_t:make#nolayer", {}, r"feature_layer 'nolayer' is not a submodule.*fc1"),
        (str(tmp_path / "missing.pt"), {}, r"missing.pt does not exist"),
    ]
    small = usermodels_t.Net(classes=5)  # another head: fc2 is 5 wide, not 3
    torch.save(small.state_dict(), tmp_path / "wrong.pt")
    cases.append(("usermodels_t:make", {"weights": tmp_path / "wrong.pt"},
                  r"weights file .*wrong.pt does not fit model usermodels_t:make: .*size mismatch for fc2.weight"
                  r".*torch.save\(model.state_dict\(\), path\)"))
    torch.save(usermodels_t.Net(), tmp_path / "pickled.pt")  # a whole pickled module: code on load
    cases.append((str(tmp_path / "pickled.pt"), {},
                  r"pickled.pt holds pickled Python objects \(usermodels_t.Net\), which curator does not "
                  r"unpickle.*torch.jit.save"))
    cases.append(("usermodels_t:make", {"weights": tmp_path / "pickled.pt"},
                  r"weights file .*pickled.pt holds pickled Python objects.*state_dict"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    cases.append((str(tmp_path / "junk.pt"), {}, r"junk.pt is not a torch file .*torch.jit.save"))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "sd.pt")
    cases.append((str(tmp_path / "sd.pt"), {}, r"neither a curator model .* nor TorchScript; .*--weights"))
    for spec, kw, pattern in cases:
        with pytest.raises(ValidationError, match=pattern):
            resolve_model(spec, device="cpu", **kw)
    with pytest.raises(ValidationError, match="unknown options"):
        resolve_model("usermodels_t:make", colour=True)
    with pytest.raises(ValidationError, match=r"smallcnn \(the built-in CNN\) takes no options \['feature_layer'\]"):
        resolve_model("smallcnn", classes=[0, 1], feature_layer="fc1")


# -- MC dropout meets a model without dropout -----------------------------------------------------

def test_model_without_dropout_refuses_mc_samples_clearly(usermod):
    a = resolve_model("usermodels_t:make_plain", device="cpu")
    assert not a.has_dropout
    images = np.zeros((2, 16, 16), np.uint8)
    assert a.predict(images).probs.shape == (2, 4)
    with pytest.raises(ValidationError, match=r"model usermodels_t:make_plain has no dropout layer.*use a policy "
                                              r"that does not need mc_probs.*add torch.nn.Dropout"):
        a.predict(images, mc_samples=5)
    with pytest.raises(ValidationError, match="no dropout layer"):
        a.mc_predict_proba(images, T=5)
    check_model(a, size=(16, 16))  # refusing is the protocol for a model without dropout
    with pytest.raises(ValidationError, match=r"gives 4 class probabilities but 3 classes are declared"):
        resolve_model("usermodels_t:make_plain", classes=["a", "b", "c"], device="cpu").predict(images)


# -- the conformance check catches broken adapters -------------------------------------------------

class _Broken:
    """Probabilities that do not sum to 1, NaN embeddings, MC passes all equal, a random version."""

    name = "broken"
    classes = None
    has_dropout = True

    def __init__(self):
        self.calls = 0

    @property
    def version(self):
        self.calls += 1
        return f"v{self.calls}"

    def predict(self, images, mc_samples=0, seed=0):
        n = len(images)
        if n == 0:
            raise ValidationError("empty")
        probs = np.full((n, 3), 0.5, dtype=np.float32)
        emb = np.full((n, 4), np.nan, dtype=np.float32)
        mc = np.broadcast_to(probs / 1.5, (mc_samples, n, 3)).copy() if mc_samples else None
        return Predictions(probs=probs, embeddings=emb, mc_probs=mc)

    def predict_proba(self, images):
        return self.predict(images).probs

    def embed(self, images):
        return self.predict(images).embeddings

    def mc_predict_proba(self, images, T=20, seed=0):
        return self.predict(images, T, seed).mc_probs


def test_check_model_reports_every_violation_at_once():
    with pytest.raises(ValidationError) as exc:
        check_model(_Broken())
    msg = str(exc.value)
    assert msg.startswith("model broken breaks the adapter protocol (4 problems)")
    for part in ("probs rows do not sum to 1", "embeddings contain NaN", "MC-dropout passes are all equal",
                 "version must be a non-empty string that does not change"):
        assert part in msg, part


def test_check_model_catches_batch_dependent_and_non_deterministic_models():
    class BatchStats(torch.nn.Module):  # normalises by the batch: answers change with the shard
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16 * 16, 3)
            self.drop = torch.nn.Dropout(0.2)

        def forward(self, x):
            x = x.flatten(1)
            x = (x - x.mean(0)) / (x.std(0) + 1e-3)
            return self.fc(self.drop(x))

    class Noisy(torch.nn.Module):  # draws from an unseeded generator of its own
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16 * 16, 3)
            self.gen = np.random.default_rng()

        def forward(self, x):
            return self.fc(x.flatten(1)) + torch.from_numpy(self.gen.normal(size=3).astype(np.float32))

    with pytest.raises(ValidationError) as exc:
        check_model(BatchStats(), device="cpu", size=(16, 16))
    assert "predict depends on the batch" in str(exc.value)
    with pytest.raises(ValidationError, match="predict is not deterministic: two calls with seed 0 differ"):
        check_model(Noisy(), device="cpu", size=(16, 16))
