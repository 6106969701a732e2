"""One registry class for named, pluggable things (policies now; sources, executors later).

Three ways in, one namespace: built-ins given as lazy ``"module:attr"``
strings, objects registered in Python (``register``), and entry points of a
group (``curator.policies``) scanned on first need. Built-in names are
reserved: neither a plugin nor a decorator can silently replace them.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable

from curator.exceptions import NotFoundError, ValidationError


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class Registry:
    def __init__(self, group: str, kind: str, builtins: dict[str, str]):
        self.group = group
        self.kind = kind
        self._builtins = dict(builtins)
        self._entries: dict[str, Any] = {}
        self._origin: dict[str, str] = {}
        self._scanned = False

    # -- registration ----------------------------------------------------
    def add(self, name: str, obj: Any, *, origin: str = "python", replace: bool = False) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(f"{self.kind} name must be a non-empty string; got {name!r}")
        if name in self._builtins:
            raise ValidationError(
                f"{self.kind} {name!r} from {origin} cannot replace the built-in {self.kind} {name!r} "
                f"({self._builtins[name]}); register it under another name"
            )
        if name in self._entries and not replace and self._entries[name] is not obj:
            raise ValidationError(
                f"{self.kind} {name!r} from {origin} is already registered by {self._origin[name]}; "
                "choose another name or pass replace=True"
            )
        self._entries[name] = obj
        self._origin[name] = origin

    def remove(self, name: str) -> None:
        """Forget a registered (not built-in) name; mainly for tests."""
        if name in self._builtins:
            raise ValidationError(f"the built-in {self.kind} {name!r} cannot be removed")
        self._entries.pop(name, None)
        self._origin.pop(name, None)

    def scan(self, force: bool = False) -> None:
        """Load the entry points of ``group`` (once, unless ``force``)."""
        if self._scanned and not force:
            return
        self._scanned = True
        from importlib.metadata import entry_points

        conflicts = []
        for ep in entry_points(group=self.group):
            origin = f"entry point {ep.name} = {ep.value!r} ({self.group})"
            if ep.name in self._entries and self._origin.get(ep.name) == origin:
                continue
            if ep.name in self._builtins:
                conflicts.append(
                    f"{self.kind} plugin {origin} cannot replace the built-in {self.kind} {ep.name!r} "
                    f"({self._builtins[ep.name]}); rename the entry point"
                )
                continue
            try:
                self.add(ep.name, _EntryPoint(ep), origin=origin)
            except ValidationError as exc:
                conflicts.append(str(exc))
        if conflicts:  # the other plugins stay registered; the conflict is reported, never silent
            raise ValidationError("; ".join(conflicts))

    # -- lookup ----------------------------------------------------------
    def names(self) -> list[str]:
        self.scan()
        return sorted({*self._builtins, *self._entries})

    def origin(self, name: str) -> str:
        self.lookup(name)
        return "built-in" if name in self._builtins else self._origin[name]

    def lookup(self, name: str) -> Any:
        if name in self._builtins:
            target = self._builtins[name]
            return _load(target) if isinstance(target, str) else target
        if name not in self._entries:
            self.scan()
        if name not in self._entries:
            names = self.names()
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            raise NotFoundError(
                f"unknown {self.kind} {name!r}{hint} Available: {', '.join(names)}"
            )
        obj = self._entries[name]
        if isinstance(obj, _EntryPoint):
            obj = obj.load(self.kind)
            self._entries[name] = obj
        return obj


class _EntryPoint:
    """An entry point loaded on first use, with a clear error if its import fails."""

    def __init__(self, ep):
        self.ep = ep

    def load(self, kind: str) -> Any:
        try:
            return self.ep.load()
        except Exception as exc:  # a broken plugin must name itself
            raise ValidationError(
                f"{kind} plugin {self.ep.name} = {self.ep.value!r} cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


Factory = Callable[..., Any]
