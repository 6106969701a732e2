"""A declared class list: for pools with no labels yet, where ground truth cannot name the classes.

``--classes`` takes one of three forms, read here once (no database):

* ``a,b,c``: the names, comma-separated, in the order the model and the labeling
  configuration use;
* ``@FILE``: a text file, one name per line (blank lines and ``#`` comments skipped);
* ``FILE.xml``: a Label Studio labeling configuration: the ``Choice`` values of its one
  ``Choices`` tag (the configuration people will label with, so the lists cannot drift).

The list is stored with the dataset (``curator.store.samples.declare_classes``), which
checks it against ground truth where there is some.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from curator.exceptions import ValidationError

__all__ = ["parse_classes", "check_names", "from_label_config"]

#: Longest class name: Label Studio shows it on a button, a folder export names a directory by it.
MAX_NAME = 200


def check_names(names, source: str) -> list[str]:
    """``names`` stripped, refused when empty, duplicated or unusable as a label."""
    out = [str(n).strip() for n in names]
    if not out:
        raise ValidationError(f"{source}: no class names; give at least two, e.g. --classes cat,dog")
    bad = [n for n in out if not n or len(n) > MAX_NAME or any(c in n for c in "\n\r\t/\\") or n in (".", "..")]
    if bad:
        raise ValidationError(f"{source}: unusable class names {bad[:5]} (empty, longer than {MAX_NAME}, or with a "
                              "path separator, tab or line break); rename them")
    seen, dups = set(), []
    for n in out:
        (dups.append(n) if n in seen else seen.add(n))
    if dups:
        raise ValidationError(f"{source}: class names given twice: {sorted(set(dups))[:10]}; list each once")
    if len(out) < 2:
        raise ValidationError(f"{source}: one class ({out[0]!r}) is no classification; give at least two")
    return out


def from_label_config(xml: str, source: str) -> list[str]:
    """The ``Choice`` values (or aliases) of the one ``Choices`` tag of a labeling configuration."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValidationError(f"{source} is not valid XML ({exc}); fix the file") from None
    tags = list(root.iter("Choices"))
    if len(tags) != 1:
        raise ValidationError(f"{source} has {len(tags)} <Choices> tags; curator needs exactly one "
                              "(the class of the image)")
    return check_names([c.get("value") or c.get("alias") or "" for c in tags[0].iter("Choice")], source)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError(f"--classes: {what} {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"--classes: {what} {path} cannot be read ({exc}); pass a UTF-8 text file") from None


def parse_classes(spec: str) -> list[str]:
    """The class names of a ``--classes`` value (see the module docstring)."""
    spec = str(spec).strip()
    if spec.startswith("@"):
        path = Path(spec[1:])
        lines = [line.strip() for line in _read(path, "class file").splitlines()]
        return check_names([line for line in lines if line and not line.startswith("#")], f"class file {path}")
    if spec.lower().endswith(".xml"):
        path = Path(spec)
        return from_label_config(_read(path, "labeling configuration"), f"labeling configuration {path}")
    return check_names(spec.split(","), f"--classes {spec!r}")
