"""Selection policies: one registry for built-ins, decorators and plugins.

    from curator import Pool, policies
    idx = policies.get("entropy").select(pool, budget=10, seed=0)
    policies.available()

Register your own with ``@policies.register("name")`` on a Policy subclass, a
score function ``fn(pool) -> (n,) scores`` or a selection function
``fn(pool, budget, rng) -> positions``; or, from a separate package, with an
entry point in the group ``curator.policies`` (``name = "pkg.module:obj"``).
Built-in names cannot be replaced.
"""

from __future__ import annotations

from curator._registry import Registry
from curator.policies.base import FunctionPolicy, Policy, ScorePolicy, as_policy

__all__ = ["get", "available", "register", "unregister", "origin", "Policy", "ScorePolicy", "FunctionPolicy",
           "GROUP"]

GROUP = "curator.policies"

_BUILTINS = {
    "random": "curator.policies.builtin:Random",
    "entropy": "curator.policies.builtin:Entropy",
    "margin": "curator.policies.builtin:Margin",
    "least_confidence": "curator.policies.builtin:LeastConfidence",
    "variation_ratio": "curator.policies.builtin:VariationRatio",
    "bald": "curator.policies.builtin:BALD",
    "novelty": "curator.policies.builtin:Novelty",
    "kcenter": "curator.policies.builtin:KCenter",
    "badge": "curator.policies.builtin:Badge",
    "curator": "curator.policies.compose:Curator",
    "typical": "curator.policies.coldstart:Typical",
    "coverage": "curator.policies.coldstart:Coverage",
    "power": "curator.policies.batch:Power",
    "powerbald": "curator.policies.batch:PowerBALD",
}

_registry = Registry(GROUP, "policy", _BUILTINS)


def available() -> list[str]:
    """Names of all registered policies: built-ins, registered in Python, and plugins."""
    return _registry.names()


def get(name: str, **params) -> Policy:
    """A new instance of policy ``name``, configured with ``params``."""
    from curator.exceptions import ValidationError

    if not isinstance(name, str):
        raise ValidationError(f"policy name must be a string; got {type(name).__name__}")
    obj = _registry.lookup(name)
    if isinstance(obj, Policy):
        if params:
            raise ValidationError(f"policy {name!r} is a ready-made instance and takes no parameters; got {sorted(params)}")
        policy = obj
    elif isinstance(obj, type) and issubclass(obj, Policy):
        try:
            policy = obj(**params)
        except TypeError as exc:
            allowed = obj._param_names()
            raise ValidationError(
                f"policy {name!r}: bad parameters {sorted(params)} ({exc}); it accepts: {', '.join(allowed) or 'none'}"
            ) from None
    else:
        if params:
            raise ValidationError(f"policy {name!r} is a function and takes no parameters; got {sorted(params)}")
        policy = as_policy(obj, name=name)
    if policy.name != name:
        try:
            policy.name = name
        except AttributeError:
            pass
    return policy


def register(name: str | None = None, *, requires=(), replace: bool = False):
    """Decorator registering a Policy subclass or a function under ``name``.

    ``requires`` lists the pool arrays a function needs (``"probs"``,
    ``"mc_probs"``, ``"embeddings"``, ``"labeled_embeddings"``).
    """

    def deco(obj):
        key = name or getattr(obj, "name", None) or obj.__name__
        if isinstance(obj, type) and issubclass(obj, Policy):
            target = obj
        else:
            as_policy(obj, name=key, requires=requires)  # fail now on what cannot be a policy
            target = _bind(obj, key, requires)
        _registry.add(key, target, origin=f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', key)}",
                      replace=replace)
        return obj

    return deco


def _bind(fn, name, requires):
    policy = as_policy(fn, name=name, requires=requires)
    return policy


def unregister(name: str) -> None:
    """Forget a policy registered in Python or by a plugin (built-ins stay)."""
    _registry.remove(name)


def origin(name: str) -> str:
    """Where policy ``name`` comes from: "built-in", a module, or an entry point."""
    return _registry.origin(name)


def rescan() -> None:
    """Read the ``curator.policies`` entry points again (after installing a plugin)."""
    _registry.scan(force=True)
