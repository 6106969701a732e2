"""Label Studio annotation webhooks: register one per project, check its secret, record each event once.

Label Studio posts ``{"action": ..., "annotation": {...}, "task": {...},
"project": {...}}`` for ANNOTATION_CREATED / ANNOTATION_UPDATED and
``{"action": "ANNOTATIONS_DELETED", "annotations": [{"id": ...}], ...}`` for
deletes, once per event, with the custom ``headers`` stored on the webhook
(webhooks/models.py ``Webhook.headers``) and no retry. curator stores the
shared secret there (header ``X-Curator-Secret``) and the receiver refuses
any request without it (403).

Exactly once. Each event has a key: the annotation id with its
``updated_at`` (created / updated), or with ``deleted``. The key is claimed
in ``label_events`` (unique) in the same transaction that applies the event,
so a redelivered event finds its key taken and changes nothing; an update
older than what is stored (it came out of order) is recorded as ``stale`` and
changes nothing; a delete marks the answer deleted once and stays as a
tombstone, so a late, older update cannot bring it back. The row written for
an answer is the one ``curator pull`` writes (same label, annotator, times),
and both take the project's lock, so pull, which stays the reconciliation for
anything a webhook missed (the receiver was down; Label Studio does not
retry), finds nothing to add after the webhooks.
"""

from __future__ import annotations

import datetime as dt
import hmac
import threading
from typing import Any

from curator.exceptions import ValidationError
from curator.integrations.labelstudio import TOOL

SECRET_HEADER = "X-Curator-Secret"
ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
#: Shortest secret accepted: it is the only thing that stops anyone on the network from writing answers.
MIN_SECRET = 16


def require_secret(settings) -> str:
    """The configured webhook secret, or one line saying how to set it."""
    secret = settings.labelstudio_webhook_secret
    if not secret or len(secret) < MIN_SECRET:
        raise ValidationError(
            f"no webhook secret of {MIN_SECRET}+ characters: set CURATOR_LABELSTUDIO_WEBHOOK_SECRET (or "
            "labelstudio_webhook_secret in the config file), e.g. to the output of: python -c "
            "'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return secret


def secret_ok(expected: str, headers) -> bool:
    """Whether the request carries the secret (constant-time compare)."""
    got = headers.get(SECRET_HEADER) if headers is not None else None
    return bool(got) and hmac.compare_digest(str(got).encode(), expected.encode())


def register(client, project_id: int, url: str, secret: str) -> int:
    """Make the project have exactly one webhook to ``url`` for the annotation actions, with the
    secret header; an existing one (e.g. the one Label Studio adds for an ML backend) is updated.
    Returns the webhook's id."""
    body = {"project": int(project_id), "url": url, "send_payload": True, "send_for_all_actions": False,
            "actions": list(ACTIONS), "headers": {SECRET_HEADER: secret}, "is_active": True}
    hooks = client.http("GET", "api/webhooks/", "list webhooks", params={"project": int(project_id)})
    mine = [h for h in hooks or [] if h.get("url") == url and h.get("project") == int(project_id)]
    if mine:
        for extra in mine[1:]:
            client.http("DELETE", f"api/webhooks/{extra['id']}/", "delete a duplicate webhook")
        client.http("PATCH", f"api/webhooks/{mine[0]['id']}/", "update the webhook", json=body)
        return int(mine[0]["id"])
    return int(client.http("POST", "api/webhooks/", "create the webhook", json=body)["id"])


def _time(value):
    from curator.integrations.labelstudio.pull import _time as parse

    return parse(value)


class Receiver:
    """Applies webhook payloads to the database of ``settings``.

    ``users`` maps Label Studio user ids to emails (as pull stores the
    annotator); unknown ids are looked up through ``client`` once.
    """

    def __init__(self, settings, client=None):
        self.settings = settings
        self.client = client
        self.users: dict[int, str] = {}
        self._projects: dict[int, Any] = {}
        self._lock = threading.Lock()  # one event at a time in this process (the DB lock covers others)

    def handle(self, payload: dict) -> dict:
        """Apply one payload; returns {"action", "outcomes": {annotation id: outcome}} (200 either way)."""
        action = payload.get("action")
        if action not in ACTIONS:
            return {"action": action, "outcomes": {}, "ignored": "not an annotation event"}
        project = self._project((payload.get("project") or {}).get("id"))
        if project is None:
            return {"action": action, "outcomes": {}, "ignored": "project not pushed by curator"}
        from curator.integrations.labelstudio.push import LOCK_WAIT_S
        from curator.store.locks import hold

        with self._lock, hold(self.settings, f"{TOOL}:project:{project.name}", wait=LOCK_WAIT_S,
                              what=f"project {project.name!r}"):
            if action == "ANNOTATIONS_DELETED":
                outcomes = self._deleted(project, [str(a["id"]) for a in payload.get("annotations") or []])
            else:
                outcomes = self._upsert(project, action, payload["annotation"])
        return {"action": action, "outcomes": outcomes}

    def _project(self, external_id):
        if external_id is None:
            return None
        if int(external_id) not in self._projects:
            from curator.store import annotations as store
            from curator.store.session import transaction

            with transaction(self.settings) as s:
                found = store.project_by_external_id(s, TOOL, int(external_id))
            if found is None:
                return None
            self._projects[int(external_id)] = found
        return self._projects[int(external_id)]

    def _annotator(self, by) -> str | None:
        if isinstance(by, dict):
            return by.get("email")
        if by is None:
            return None
        if by not in self.users and self.client is not None:
            self.users.update({u.id: u.email for u in self.client.call("list users", self.client.sdk.users.list)})
            self.users.setdefault(by, str(by))  # a user the server does not list: asked once, as pull names it
        return self.users.get(by, str(by))

    def _upsert(self, project, action: str, ann: dict) -> dict[str, str]:
        from curator.integrations.labelstudio.pull import _label
        from curator.store import annotations as store
        from curator.store.session import transaction

        ext = str(ann["id"])
        updated = _time(ann.get("updated_at"))
        key = f"{ext}@{updated.isoformat() if updated else 'created'}"
        label = _label(ann.get("result"), project.from_name)
        skipped = bool(ann.get("was_cancelled")) or label is None
        annotator = self._annotator(ann.get("completed_by"))
        with transaction(self.settings) as s:
            if not store.claim_event(s, TOOL, project.name, key, action, ext):
                return {ext: "duplicate"}
            state = store.answer_state(s, TOOL, ext)
            if store.deleted_by_event(s, TOOL, ext) or (
                state is not None and state.updated_at is not None and updated is not None
                and store.naive_utc(updated) <= state.updated_at
            ):
                outcome = "stale"
            elif state is None:
                link = store.link_of_task(s, TOOL, project.name, int(ann["task"]))
                if link is None:
                    outcome = "unlinked"
                else:
                    store.add_annotations(s, TOOL, [store.NewAnnotation(
                        sample_id=link[1], task_link_id=link[0], external_id=ext, label=None if skipped else label,
                        skipped=skipped, annotator=annotator,
                        created_at=_time(ann.get("created_at")) or dt.datetime.now(dt.timezone.utc),
                        updated_at=updated)])
                    outcome = "added"
            else:
                store.change_annotations(s, [store.AnnotationChange(
                    id=state.id, label=None if skipped else label, skipped=skipped, annotator=annotator,
                    updated_at=updated)])
                outcome = "updated"
            store.set_event_outcome(s, TOOL, key, outcome)
        return {ext: outcome}

    def _deleted(self, project, ids: list[str]) -> dict[str, str]:
        from curator.store import annotations as store
        from curator.store.session import transaction

        outcomes = {}
        with transaction(self.settings) as s:
            for ext in ids:
                key = f"{ext}@deleted"
                if not store.claim_event(s, TOOL, project.name, key, "ANNOTATIONS_DELETED", ext):
                    outcomes[ext] = "duplicate"
                    continue
                state = store.answer_state(s, TOOL, ext)
                if state is not None and not state.deleted:
                    store.mark_deleted(s, [state.id])
                    outcomes[ext] = "deleted"
                else:
                    outcomes[ext] = "gone"  # never seen or already deleted: kept as the tombstone
                store.set_event_outcome(s, TOOL, key, outcomes[ext])
        return outcomes
