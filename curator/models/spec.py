"""One model spec for every way to bring a model: ``resolve_model(spec) -> adapter``.

A spec is one of

* ``smallcnn`` (the built-in CNN, untrained unless ``weights`` is a curator ``.pt`` file) or a
  ``.pt`` file saved by ``CNNAdapter.save``;
* ``package.module:factory`` (optionally ``#layer``): ``factory()`` returns a ``torch.nn.Module``
  giving logits; ``weights`` is a state_dict file (``torch.load(weights_only=True)``);
* a TorchScript file (``torch.jit.save``; ``.pt``/``.ts``): recognised by its contents;
* a name registered in Python (``register``) or by another package's entry point in the group
  ``curator.models``. Built-in names cannot be replaced.

A file is never unpickled as code: a pickled ``nn.Module`` (``torch.save(model)``) is refused.
``ModelSpec`` is the parsed, picklable form an executor ships to its workers; ``load()`` builds
the same adapter anywhere (factories run under a fixed torch seed, so even untrained weights
agree between processes).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from curator._registry import Registry
from curator.exceptions import NotFoundError, ValidationError

__all__ = ["ModelSpec", "resolve_model", "register", "unregister", "available", "origin", "rescan", "GROUP",
           "KINDS", "is_torchscript", "spec_record", "spec_from_record", "looks_like_spec", "fit_hook",
           "run_fit_hook"]

GROUP = "curator.models"
KINDS = ("builtin", "file", "factory", "torchscript", "registered")

#: ``package.module:attr`` with an optional ``#feature.layer``.
_FACTORY = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)"
                      r"(?:#(?P<layer>[\w.]+))?$")
_FILE_SUFFIXES = (".pt", ".pth", ".ts", ".pts", ".ptl", ".torchscript")
_HOW = ("give the built-in CNN (smallcnn or a .pt file saved by curator), package.module:factory, "
        "a TorchScript file (torch.jit.save), or a registered model name")
#: Options a spec may carry (besides weights and classes): what TorchAdapter takes.
_OPTIONS = ("feature_layer", "input_spec", "batch_size", "name", "channels")


def _smallcnn(*, weights=None, classes=None, device=None, channels: int = 1):
    """The built-in CNN: loaded from ``weights`` (a curator .pt file), else untrained for ``classes``."""
    from curator.models.cnn import CNNAdapter, SmallCNN

    if weights is not None:
        return _load_curator_file(Path(weights), device=device, classes=classes)
    if not classes:
        raise ValidationError("model smallcnn without weights needs its class list (classes=[...]); "
                              "or pass weights=a .pt file saved by curator")
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = SmallCNN(in_channels=channels, num_classes=len(classes))
    return CNNAdapter(module, device=device, classes=classes)


#: Built-in names, reserved: neither a plugin nor ``register`` can replace them.
BUILTINS = {"smallcnn": "curator.models.spec:_smallcnn"}
_registry = Registry(GROUP, "model", BUILTINS)


# --------------------------------------------------------------------------- registry


def available() -> list[str]:
    """Names of all registered models: built-ins, registered in Python, and plugins."""
    return _registry.names()


def register(name: str | None = None, *, replace: bool = False):
    """Decorator registering a model factory under ``name``.

    The factory is called with the keywords it accepts among ``weights``, ``classes``,
    ``device`` and returns a ``torch.nn.Module`` (logits) or a ready adapter.
    """

    def deco(fn):
        if not callable(fn):
            raise ValidationError(f"model {name!r}: register a callable (a factory), not {type(fn).__name__}")
        key = name or fn.__name__
        _registry.add(key, fn, origin=f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', key)}",
                      replace=replace)
        return fn

    return deco


def unregister(name: str) -> None:
    """Forget a model registered in Python or by a plugin (built-ins stay)."""
    _registry.remove(name)


def origin(name: str) -> str:
    """Where model ``name`` comes from: "built-in", a module, or an entry point."""
    return _registry.origin(name)


def rescan() -> None:
    """Read the ``curator.models`` entry points again (after installing a plugin)."""
    _registry.scan(force=True)


# --------------------------------------------------------------------------- files


def is_torchscript(path) -> bool:
    """Whether ``path`` is a TorchScript archive (its zip holds compiled ``code/``), read without
    unpickling anything."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _check_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise ValidationError(f"{what} {path} does not exist; check the path")
    if not path.is_file():
        raise ValidationError(f"{what} {path} is not a file; pass the file itself")
    return path


def _torch_load(path: Path, what: str, fix: str):
    """``torch.load(weights_only=True)``: tensors and plain containers only, never code."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise ValidationError(f"{what} {path} cannot be read: permission denied; check its permissions") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:  # a real pickle naming Python classes: loading it would run their code
            raise ValidationError(
                f"{what} {path} holds pickled Python objects ({found[1]}), which curator does not unpickle; {fix}"
            ) from None
        raise ValidationError(f"{what} {path} is not a torch file (corrupt, truncated or another format); "
                              f"{fix}") from None
    except Exception as exc:  # zip, EOF, magic number ...: a corrupt or foreign file
        raise ValidationError(f"{what} {path} is not a torch file (corrupt, truncated or another format: "
                              f"{type(exc).__name__}); {fix}") from None


def _load_curator_file(path: Path, *, device=None, classes=None):
    from curator.models.cnn import CNNAdapter, SmallCNN

    fix = ("save the model with torch.jit.save (TorchScript), or give package.module:factory with "
           "--weights a state_dict file")
    blob = _torch_load(_check_file(path, "model file"), "model file", fix)
    if not (isinstance(blob, dict) and "config" in blob and "state_dict" in blob):
        raise ValidationError(f"model file {path} is neither a curator model (CNNAdapter.save) nor TorchScript; {fix}")
    try:
        module = SmallCNN(**blob["config"])
        module.load_state_dict(blob["state_dict"])
    except Exception as exc:
        raise ValidationError(f"model file {path} is a damaged curator model ({type(exc).__name__}); "
                              "train and save it again") from None
    saved = blob.get("classes")
    if classes is not None and saved is not None and [str(c) for c in classes] != [str(c) for c in saved]:
        raise ValidationError(f"model file {path} was trained for classes {list(saved)}, not {list(classes)}; "
                              "pass the matching class list or another model")
    return CNNAdapter(module, name=blob.get("name", "smallcnn"), device=device,
                      classes=saved if saved is not None else classes)


def _load_torchscript(path: Path, *, device=None, classes=None, **options):
    import torch

    from curator.models.base import ScriptAdapter

    _check_file(path, "TorchScript file")
    extra = {TORCHSCRIPT_META: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        raise ValidationError(f"TorchScript file {path} cannot be loaded ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}); "
                              "save it again with torch.jit.save") from None
    meta = _script_meta(path, extra[TORCHSCRIPT_META])
    if options.get("input_spec") is None and meta.get("input_spec") is not None:
        options["input_spec"] = meta["input_spec"]
    if classes is None:
        classes = meta.get("classes")
    options.pop("feature_layer", None)
    options.pop("channels", None)
    return ScriptAdapter(module.eval(), name=options.pop("name", None) or path.stem, device=device,
                         classes=classes, **options)


#: The extra file of a TorchScript archive where a model describes itself (JSON: ``input_spec``
#: as a dict, ``classes``): ``torch.jit.save(m, path, _extra_files={"curator.json": json.dumps(...)})``.
TORCHSCRIPT_META = "curator.json"


def _script_meta(path: Path, raw) -> dict:
    import json

    if not raw:
        return {}
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict) or not set(meta) <= {"input_spec", "classes"}:
            raise ValueError("expected an object with input_spec and/or classes")
    except ValueError as exc:
        raise ValidationError(f"TorchScript file {path}: its {TORCHSCRIPT_META} is not valid ({exc}); write "
                              '{"input_spec": {"size": [H, W], "channels": C, ...}, "classes": [...]}') from None
    if isinstance(meta.get("input_spec"), dict) and meta["input_spec"].get("size") is not None:
        meta["input_spec"] = {**meta["input_spec"], "size": tuple(meta["input_spec"]["size"])}
    return meta


# --------------------------------------------------------------------------- modules


def _import_target(target: str):
    m = _FACTORY.match(target)
    module_name, attr = m["module"], m["attr"]
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or module_name
        raise ValidationError(f"model {target}: cannot import {module_name} (no module named {missing!r}); "
                              "install the package that provides it or fix the module path") from None
    except Exception as exc:
        raise ValidationError(f"model {target}: importing {module_name} failed ({type(exc).__name__}: {exc}); "
                              "fix that module") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")][:15]
            raise ValidationError(f"model {target}: {module_name} has no attribute {attr!r}; "
                                  f"it has: {', '.join(public)}")
        obj = getattr(obj, part)
    return obj


def _call_factory(fn, label: str, kwargs: dict):
    """``fn(**accepted kwargs)`` under a fixed torch seed (same initial weights in every process)."""
    import torch

    if not callable(fn):
        raise ValidationError(f"model {label} is a {type(fn).__name__}, not a factory; "
                              "point at a function or class that returns a torch.nn.Module")
    try:
        params = inspect.signature(fn).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        passed = {k: v for k, v in kwargs.items() if v is not None and (takes_all or k in params)}
    except (TypeError, ValueError):
        passed = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            return fn(**passed), set(passed)
        except Exception as exc:
            raise ValidationError(f"model {label}: the factory raised {type(exc).__name__}: {exc}; "
                                  "fix the factory (it is called with no arguments)") from None


def _load_weights(module, weights, label: str):
    import torch

    path = _check_file(Path(weights), "weights file")
    fix = f"pass the file written by torch.save(model.state_dict(), path) for {label}"
    state = _torch_load(path, "weights file", fix)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValidationError(f"weights file {path} is not a state_dict (a dict of tensors); {fix}")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        if detail.startswith("Error(s) in loading state_dict"):
            detail = detail.split(": ", 1)[-1]
        detail = detail if len(detail) <= 300 else detail[:300].rsplit(". ", 1)[0] + ". ..."
        raise ValidationError(f"weights file {path} does not fit model {label}: {detail}; {fix}") from None


def _adapter_of(obj, label: str, *, weights=None, classes=None, device=None, weights_done=False, **options):
    """Wrap what a factory returned: an ``nn.Module`` in a TorchAdapter, a ready adapter as is."""
    import torch

    from curator.models.base import TorchAdapter

    if hasattr(obj, "predict") and hasattr(obj, "embed") and not isinstance(obj, torch.nn.Module):
        if weights is not None and not weights_done:
            raise ValidationError(f"model {label} returns a ready adapter, which loads its own weights; "
                                  "let its factory accept a weights argument, or drop --weights")
        if classes is not None and getattr(obj, "classes", None) is None:
            obj.classes = list(classes)
        return obj
    if not isinstance(obj, torch.nn.Module):
        raise ValidationError(f"model {label} returned {type(obj).__name__}, not a torch.nn.Module; "
                              "the factory must return the model (logits out) or a curator adapter")
    if weights is not None and not weights_done:
        _load_weights(obj, weights, label)
    if isinstance(obj, torch.jit.ScriptModule):
        from curator.models.base import ScriptAdapter

        options.pop("feature_layer", None)
        options.pop("channels", None)
        return ScriptAdapter(obj.eval(), name=options.pop("name", None) or label, device=device, classes=classes,
                             **options)
    channels = options.pop("channels", None)
    if channels is not None and options.get("input_spec") is None:
        options["input_spec"] = {"channels": channels}
    try:
        return TorchAdapter(obj.eval(), options.pop("feature_layer", None), name=options.pop("name", None) or label,
                            device=device, classes=classes, **options)
    except TypeError as exc:
        raise ValidationError(f"model {label}: bad options ({exc}); accepted: {', '.join(_OPTIONS)}") from None


# --------------------------------------------------------------------------- the spec


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: what to build (``kind``, ``target``), with which ``weights`` and
    ``options`` (``classes``, ``feature_layer``, ``input_spec``, ``batch_size``, ``name``,
    ``channels``). Plain data: it pickles, and ``load()`` rebuilds the adapter in any process."""

    kind: str
    target: str
    weights: str | None = None
    options: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, spec, *, weights=None, classes=None, **options) -> "ModelSpec":
        if isinstance(spec, ModelSpec):
            opts = dict(spec.options)
            opts.update({k: v for k, v in options.items() if v is not None})
            if classes is not None:
                opts["classes"] = list(classes)
            return cls(spec.kind, spec.target, str(weights) if weights is not None else spec.weights, opts)
        if isinstance(spec, Path):
            spec = str(spec)
        if not isinstance(spec, str) or not spec.strip():
            raise ValidationError(f"model spec must be a non-empty string or path; got {spec!r}; {_HOW}")
        spec = spec.strip()
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValidationError(f"model {spec}: unknown options {unknown}; accepted: {', '.join(_OPTIONS)}")
        opts = {k: v for k, v in options.items() if v is not None}
        if classes is not None:
            classes = [c for c in classes]
            if not classes or len(set(map(str, classes))) != len(classes):
                raise ValidationError(f"model {spec}: classes must be a non-empty list of distinct names; "
                                      f"got {classes!r}")
            opts["classes"] = classes
        weights = str(weights) if weights is not None else None
        m = _FACTORY.match(spec)
        if m and not Path(spec).exists():
            if m["layer"]:
                if opts.get("feature_layer") not in (None, m["layer"]):
                    raise ValidationError(f"model {spec}: feature layer given twice ({m['layer']!r} and "
                                          f"{opts['feature_layer']!r}); keep one")
                opts["feature_layer"] = m["layer"]
            return cls("factory", f"{m['module']}:{m['attr']}", weights, opts)
        path = Path(spec).expanduser()
        looks_like_file = path.suffix.lower() in _FILE_SUFFIXES or "/" in spec or "\\" in spec
        if not looks_like_file and spec in BUILTINS:
            return cls("builtin", spec, weights, opts)
        if not looks_like_file and not path.exists():
            try:
                _registry.lookup(spec)
            except NotFoundError as exc:
                raise NotFoundError(f"model {spec!r} is not a file, package.module:factory or registered name "
                                    f"({exc}); {_HOW}") from None
            return cls("registered", spec, weights, opts)
        _check_file(path, "model file")
        if weights is not None:
            raise ValidationError(f"model file {path} carries its own weights; drop --weights "
                                  "(weights go with smallcnn or package.module:factory)")
        kind = "torchscript" if is_torchscript(path) else "file"
        return cls(kind, str(path.resolve()), None, opts)

    def __hash__(self) -> int:  # options is a dict: hash its items, so a spec can key a cache of models
        return hash((self.kind, self.target, self.weights, repr(sorted(self.options.items(), key=str))))

    def __str__(self) -> str:
        layer = self.options.get("feature_layer")
        text = f"{self.target}#{layer}" if self.kind == "factory" and layer else self.target
        return f"{text} (weights {self.weights})" if self.weights else text

    def load(self, device=None):
        """The adapter this spec describes, built in this process."""
        opts = dict(self.options)
        classes = opts.pop("classes", None)
        if self.kind == "file":
            if opts.keys() - {"name"}:
                raise ValidationError(f"model file {self.target} is the built-in CNN, which takes no options "
                                      f"{sorted(opts.keys() - {'name'})}")
            return _load_curator_file(Path(self.target), device=device, classes=classes)
        if self.kind == "torchscript":
            return _load_torchscript(Path(self.target), device=device, classes=classes, **opts)
        if self.kind == "factory":
            layer = self.options.get("feature_layer")
            label = f"{self.target}#{layer}" if layer else self.target
            factory = _import_target(self.target)
            obj, _ = _call_factory(factory, label, {})
            return _adapter_of(obj, label, weights=self.weights, classes=classes, device=device, **opts)
        if self.kind in ("builtin", "registered"):
            factory = _registry.lookup(self.target)
            if self.kind == "builtin":
                extra = sorted(opts.keys() - {"channels"})
                if extra:
                    raise ValidationError(f"model {self.target} (the built-in CNN) takes no options {extra}; "
                                          "it takes weights, classes and channels")
                return factory(weights=self.weights, classes=classes, device=device,
                               **({"channels": opts["channels"]} if "channels" in opts else {}))
            obj, passed = _call_factory(factory, f"model {self.target} ({_registry.origin(self.target)})",
                                        {"weights": self.weights, "classes": classes, "device": device})
            return _adapter_of(obj, self.target, weights=self.weights, classes=classes, device=device,
                               weights_done="weights" in passed, **opts)
        raise ValidationError(f"model spec kind {self.kind!r} is not one of {', '.join(KINDS)}")


def resolve_model(spec, *, weights=None, classes=None, device=None, **options) -> Any:
    """The adapter for ``spec`` (see the module docstring); an adapter passes through unchanged
    and a ``torch.nn.Module`` is wrapped in a TorchAdapter."""
    if hasattr(spec, "predict") and hasattr(spec, "embed") and not isinstance(spec, (str, Path, ModelSpec)):
        return spec
    try:
        import torch

        if isinstance(spec, torch.nn.Module):
            return _adapter_of(spec, type(spec).__name__, weights=weights, classes=classes, device=device, **options)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return ModelSpec.parse(spec, weights=weights, classes=classes, **options).load(device=device)


# --------------------------------------------------------------------------- records and training hooks


def spec_record(spec: ModelSpec) -> dict:
    """The JSON form of ``spec`` stored with a model row, so ``--model <id>`` rebuilds it."""
    def plain(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)

    return {"kind": spec.kind, "target": spec.target, "weights": spec.weights, "options": plain(spec.options)}


def spec_from_record(record: dict) -> ModelSpec:
    """The ModelSpec a model row recorded (``spec_record``)."""
    options = dict(record.get("options") or {})
    if isinstance(options.get("input_spec"), dict) and options["input_spec"].get("size") is not None:
        options["input_spec"] = {**options["input_spec"], "size": tuple(options["input_spec"]["size"])}
    return ModelSpec(record["kind"], record["target"], record.get("weights"), options)


def looks_like_spec(text: str) -> bool:
    """Whether ``text`` names a model by spec syntax (``module:factory``, a registered or built-in
    name) rather than a recorded model name."""
    text = str(text).strip()
    if _FACTORY.match(text) or text in BUILTINS:
        return True
    try:
        return text in _registry.names()
    except Exception:  # a broken plugin is reported when it is used, not here
        return False


def fit_hook(spec: ModelSpec):
    """The training hook of ``spec``'s model, or None (the model is used frozen).

    The hook is a function ``fit(model, images, labels, *, classes, seed)`` in the module that
    defines the factory (``package.module:factory`` or a registered factory): it trains the
    ``torch.nn.Module`` the factory returned, in place (or returns the trained module). ``images``
    is a list of decoded uint8 images, ``labels`` int64 indices into ``classes``. The built-in CNN
    trains with curator's own recipe; a curator ``.pt`` file and a TorchScript file have no hook.
    """
    if spec.kind == "factory":
        module = importlib.import_module(_FACTORY.match(spec.target)["module"])
    elif spec.kind == "registered":
        module = inspect.getmodule(_registry.lookup(spec.target))
    else:
        return None
    hook = getattr(module, "fit", None)
    return hook if callable(hook) else None


def run_fit_hook(hook, adapter, images, labels, *, classes, seed: int, label: str):
    """Train ``adapter``'s module with ``hook`` under a fixed torch seed; the trained module in eval
    mode. A hook that raises or returns something else is one ValidationError naming it."""
    import torch

    module = getattr(adapter, "module", None)
    if not isinstance(module, torch.nn.Module):
        raise ValidationError(f"model {label}: its factory returns a ready adapter, so its fit hook has no "
                              "torch.nn.Module to train; return the nn.Module from the factory")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        module.train()
        try:
            out = hook(module, images, np.asarray(labels, dtype=np.int64), classes=list(classes), seed=int(seed))
        except Exception as exc:
            raise ValidationError(f"model {label}: its fit hook raised {type(exc).__name__}: {exc}; fix "
                                  "fit(model, images, labels, *, classes, seed) in the factory's module") from None
    if out is not None and not isinstance(out, torch.nn.Module):
        raise ValidationError(f"model {label}: its fit hook returned {type(out).__name__}; return None (trained in "
                              "place) or the trained torch.nn.Module")
    return (out if out is not None else module).eval()
