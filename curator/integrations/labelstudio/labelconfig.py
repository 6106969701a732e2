"""The labeling configuration: generated from the dataset's classes, or checked against the data.

A user-supplied configuration is read once, here, and reduced to what push,
pull and the oracle need (the ``Choices`` tag, the ``Image`` tag it labels
and the task field the image comes from), so a configuration that does not fit
the data fails before anything reaches the server, with the tag named.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

from curator.exceptions import ValidationError

#: Task data fields push sends; a configuration may refer to any of them.
TASK_FIELDS = ("image", "sample_id", "round", "rank", "score", "dataset")
_VAR = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


@dataclasses.dataclass(frozen=True)
class LabelConfig:
    xml: str
    from_name: str  # the Choices tag
    to_name: str  # the Image tag it labels
    image_field: str  # task data field holding the image URL
    choices: tuple[str, ...]


def image_classification(classes: list[str] | tuple[str, ...]) -> LabelConfig:
    """Single-choice image classification over ``classes`` (in the dataset's order)."""
    if not classes:
        raise ValidationError(
            "the dataset has no classes, so no labeling configuration can be generated; "
            "ingest labels (or class folders) first, or pass --label-config FILE"
        )
    options = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in classes)
    xml = (
        "<View>\n"
        '  <Image name="image" value="$image" maxWidth="360px" zoom="true" zoomControl="true"/>\n'
        '  <Header value="Sample $sample_id, rank $rank"/>\n'
        '  <Choices name="label" toName="image" choice="single" showInLine="true" required="true">\n'
        f"{options}\n"
        "  </Choices>\n"
        "</View>"
    )
    return LabelConfig(xml, "label", "image", "image", tuple(str(c) for c in classes))


def validate(xml: str, classes: list[str] | tuple[str, ...], *, source: str = "label config") -> LabelConfig:
    """Check a user configuration against the data curator sends; return its parts.

    Requires one ``Choices`` tag labeling an ``Image`` whose value is a task
    field, variables that exist in the tasks, and a choice for every class.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValidationError(f"{source} is not valid XML ({exc}); fix the file") from None
    images = {el.get("name"): el for el in root.iter("Image")}
    if not images:
        raise ValidationError(f"{source} has no <Image> tag; curator sends images (value=\"$image\")")
    for el in root.iter():
        for attr in ("value", "valueList"):
            m = _VAR.match(el.get(attr, ""))
            if m and m.group(1) not in TASK_FIELDS:
                raise ValidationError(
                    f"{source}: <{el.tag} name={el.get('name')!r}> uses ${m.group(1)}, which curator's "
                    f"tasks do not have; use one of ${', $'.join(TASK_FIELDS)}"
                )
    choices_tags = list(root.iter("Choices"))
    if len(choices_tags) != 1:
        raise ValidationError(
            f"{source} has {len(choices_tags)} <Choices> tags; curator needs exactly one "
            "(the class of the image)"
        )
    tag = choices_tags[0]
    from_name, to_name = tag.get("name"), tag.get("toName")
    if to_name not in images:
        raise ValidationError(
            f"{source}: <Choices name={from_name!r}> labels toName={to_name!r}, but the <Image> "
            f"tags are {sorted(images)}; point toName at the image"
        )
    m = _VAR.match(images[to_name].get("value", ""))
    if not m:
        raise ValidationError(f"{source}: <Image name={to_name!r}> needs value=\"$image\"")
    values = tuple(c.get("value") or c.get("alias") or "" for c in tag.iter("Choice"))
    missing = [c for c in classes if str(c) not in values]
    if missing:
        raise ValidationError(
            f"{source}: <Choices name={from_name!r}> lacks the dataset's classes "
            f"{missing[:10]}; add a <Choice value=...> for each class"
        )
    return LabelConfig(xml, from_name, to_name, m.group(1), values)
