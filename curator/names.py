"""The one check for names people give: datasets, versions, Label Studio projects.

Names become folder names in the workspace, keys in the database and titles on
servers, so they are checked once, at the boundary, with one policy:

- dataset and version names: 1-100 characters of letters, digits, ``.``, ``_``
  and ``-``, starting with a letter or a digit; **case-insensitive**, stored in
  lower case (``MNIST`` and ``mnist`` are one dataset), so they are safe as
  file names on every file system;
- project titles: 1-200 printable characters without path separators, kept as
  given (Label Studio shows them), surrounding spaces removed.

No name may contain a path separator, ``..`` or a control character, so a
name can never point outside the workspace (see ``inside``).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from curator.exceptions import ValidationError

__all__ = ["check_name", "dataset_name", "version_name", "project_title", "inside", "callback"]

_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_KINDS = ("dataset", "version", "project")


def _control(value: str) -> bool:
    return any(unicodedata.category(ch).startswith("C") for ch in value)


def check_name(value, *, kind: str = "dataset") -> str:
    """``value`` as a valid ``kind`` name (normalised), or a ValidationError saying what to change."""
    if kind not in _KINDS:
        raise ValueError(f"unknown kind of name {kind!r}")
    if not isinstance(value, str):
        raise ValidationError(f"{kind} name must be a string; got {type(value).__name__}")
    if kind == "project":
        title = value.strip()
        if not title:
            raise ValidationError("project title is empty; give a title such as curator-mydata")
        if _control(title) or "/" in title or "\\" in title or len(title) > 200:
            raise ValidationError(
                f"project title {value!r} is not allowed: use at most 200 printable characters "
                "without '/', '\\' or control characters"
            )
        return title
    name = value.lower()
    if not name:
        raise ValidationError(f"{kind} name is empty; give a name such as my-{kind}")
    if not _SLUG.fullmatch(name) or name in (".", ".."):
        raise ValidationError(
            f"{kind} name {value!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/', spaces or control characters)"
        )
    return name


def dataset_name(value) -> str:
    return check_name(value, kind="dataset")


def version_name(value) -> str:
    return check_name(value, kind="version")


def project_title(value) -> str:
    return check_name(value, kind="project")


def inside(root: Path | str, *parts: str) -> Path:
    """``root/parts...``, refused unless it stays inside ``root`` (names are checked
    already; this is the last guard before a file is written)."""
    root = Path(root).resolve()
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise ValidationError(f"{path} is outside the workspace {root}; curator writes only inside it")
    return path


def callback(kind: str):
    """A click parameter callback checking (and normalising) a ``kind`` name as it is parsed,
    so a command refuses a bad name before it does anything; ``None`` (an optional name
    not given) passes. Kept free of click so this module stays importable anywhere."""
    if kind not in _KINDS:
        raise ValueError(f"unknown kind of name {kind!r}")

    def check(ctx, param, value):
        if value is None:
            return None
        if isinstance(value, tuple):
            return tuple(check_name(v, kind=kind) for v in value)
        return check_name(value, kind=kind)

    return check
