"""A labeler stand-in: answers tasks through Label Studio's API with the ground-truth label.

It works the queue the way a person does: ask the next-task endpoint for the
next task (so it follows the project's queue order), then submit an annotation
(``POST /api/tasks/{id}/annotations/``, the request the labeling UI sends on
Submit; a skip is the same request with ``was_cancelled``). Other annotators
are real users of the server: the annotation is posted with ``completed_by``
set to them, as Label Studio records it for a person.
"""

from __future__ import annotations

import dataclasses

from curator.exceptions import NotFoundError, ValidationError
from curator.integrations.labelstudio import TOOL
from curator.integrations.labelstudio.client import Client, NotOnServer


@dataclasses.dataclass
class OracleReport:
    annotated: int = 0
    skipped: int = 0
    order: list[int] = dataclasses.field(default_factory=list)  # sample ids, in the order served
    annotation_ids: dict[int, int] = dataclasses.field(default_factory=dict)  # sample id -> annotation id


def _project(settings, name: str):
    """(server id, from_name, to_name, ground truth by sample, task by sample) of project ``name``."""
    from curator.store import annotations as store
    from curator.store.session import transaction

    with transaction(settings) as s:
        row = store.project(s, TOOL, name)
        if row is None:
            raise NotFoundError(f"no Label Studio project {name!r} in the database; push a round first")
        truth = store.linked_truth(s, TOOL, name)
        tasks = store.links(s, TOOL, name)
        return row.external_id, row.from_name, row.to_name, truth, tasks


def user_id(client: Client, email: str) -> int:
    """The id of user ``email`` on the server, created (without a password) if new."""
    for u in client.call("list users", client.sdk.users.list):
        if u.email == email:
            return u.id
    created = client.call(f"create user {email}", client.sdk.users.create, email=email,
                          username=email.split("@")[0])
    return created.id


def annotate(
    settings,
    project: str,
    *,
    limit: int | None = None,
    sample_ids: list[int] | None = None,
    skip: set[int] | frozenset[int] = frozenset(),
    labels: dict[int, str] | None = None,
    annotator: str | None = None,
    client: Client | None = None,
) -> OracleReport:
    """Answer up to ``limit`` tasks of ``project`` from the queue (or exactly ``sample_ids``).

    ``skip``: samples to skip, as a person pressing Skip; ``labels``: answers
    that replace the ground truth (a wrong or disagreeing labeler);
    ``annotator``: e-mail of another user on whose behalf to answer.
    """
    client = client or Client.from_settings(settings)
    pid, from_name, to_name, truth, tasks = _project(settings, project)
    labels = labels or {}
    by = user_id(client, annotator) if annotator else None
    report = OracleReport()

    def submit(task_id: int, sid: int) -> None:
        if sid in skip:
            body = {"result": [], "was_cancelled": True, "lead_time": 1.0}
            report.skipped += 1
        else:
            label = labels.get(sid, truth.get(sid))
            if label is None:
                raise ValidationError(f"sample {sid} has no ground-truth label; the oracle cannot answer it")
            body = {
                "result": [{"from_name": from_name, "to_name": to_name, "type": "choices",
                            "value": {"choices": [str(label)]}}],
                "lead_time": 1.0,
            }
            report.annotated += 1
        if by is not None:
            body["completed_by"] = by
        ann = client.http("POST", f"api/tasks/{task_id}/annotations/", f"annotate task {task_id}", json=body)
        report.order.append(sid)
        report.annotation_ids[sid] = int(ann["id"])

    if sample_ids is not None:
        for sid in sample_ids[:limit]:
            if sid not in tasks:
                raise NotFoundError(f"sample {sid} was not pushed to project {project!r}")
            submit(tasks[sid], sid)
        return report
    while limit is None or len(report.order) < limit:
        try:
            task = client.http("GET", f"api/projects/{pid}/next", f"next task of {project!r}")
        except NotOnServer:
            break  # the queue is empty
        submit(int(task["id"]), int(task["data"]["sample_id"]))
    return report


def update_label(settings, annotation_id: int, label: str, project: str, client: Client | None = None) -> None:
    """Change an existing annotation's answer, as a person editing and re-submitting it."""
    client = client or Client.from_settings(settings)
    _, from_name, to_name, _, _ = _project(settings, project)
    client.http(
        "PATCH", f"api/annotations/{annotation_id}", f"update annotation {annotation_id}",
        json={"result": [{"from_name": from_name, "to_name": to_name, "type": "choices",
                          "value": {"choices": [str(label)]}}]},
    )
