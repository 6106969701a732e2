"""The Label Studio SDK behind one small class whose errors name the server, never the token.

Every call goes through ``Client.call``, which turns connection failures,
rejected tokens and missing objects into ``LabelStudioError`` messages with
the URL and the fix. The token is held by the SDK only; it is never formatted
into a message or a log line.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from curator.exceptions import LabelStudioError, MissingExtraError, ValidationError


class NotOnServer(LabelStudioError):
    """The server answered 404: the project or task is gone (deleted by hand)."""


class Client:
    """A connection to one Label Studio server (``url``) as the token's user."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 300.0):
        if not token:
            raise ValidationError(
                f"no API token for Label Studio at {url}: set CURATOR_LABELSTUDIO_TOKEN "
                "(or labelstudio_token in the config file)"
            )
        try:
            from label_studio_sdk.client import LabelStudio
        except ImportError:
            raise MissingExtraError("label-studio-sdk", "labelstudio") from None
        self.url = url.rstrip("/")
        self.sdk = LabelStudio(base_url=self.url, api_key=token, timeout=timeout)

    @classmethod
    def from_settings(cls, settings) -> "Client":
        return cls(settings.labelstudio_url, settings.labelstudio_token)

    def call(self, what: str, fn: Callable, *args, **kwargs) -> Any:
        """Run one SDK call; translate its failures into one-line ``LabelStudioError``s."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            return fn(*args, **kwargs)
        except httpx.TransportError as exc:
            raise LabelStudioError(
                f"Label Studio at {self.url} does not answer ({what}: {type(exc).__name__}); "
                "start it with: curator labelstudio up, or fix CURATOR_LABELSTUDIO_URL"
            ) from None
        except ApiError as exc:
            code = exc.status_code
            if code in (401, 403):
                raise LabelStudioError(
                    f"Label Studio at {self.url} refused the API token (HTTP {code}, {what}); "
                    "set CURATOR_LABELSTUDIO_TOKEN to the access token of a user of this server"
                ) from None
            if code == 404:
                raise NotOnServer(f"Label Studio at {self.url}: {what}: not found (HTTP 404)") from None
            raise LabelStudioError(
                f"Label Studio at {self.url}: {what} failed with HTTP {code}: {_short(exc.body)}"
            ) from None

    # -- raw HTTP for the few endpoints whose SDK models are slow or missing -------------
    def http(self, method: str, path: str, what: str, **kwargs) -> Any:
        """One request through the SDK's authenticated httpx client; JSON body back."""
        from label_studio_sdk.core.api_error import ApiError

        wrapper = self.sdk._client_wrapper

        def send():
            resp = wrapper.httpx_client.request(path, method=method, **kwargs)
            if resp.status_code >= 400:
                try:
                    body = resp.json()
                except ValueError:
                    body = resp.text
                raise ApiError(status_code=resp.status_code, body=body, headers=dict())
            if not resp.content:
                return None
            return resp.json()

        return self.call(what, send)

    def check(self) -> dict:
        """Who the token belongs to; raises when the server is down or the token is wrong."""
        me = self.call("who am I", self.sdk.users.whoami)
        return {"id": me.id, "email": me.email}

    def project(self, project_id: int) -> dict:
        return self.http("GET", f"api/projects/{project_id}", f"read project {project_id}")

    def find_projects(self, title: str) -> list[dict]:
        pager = self.call("list projects", self.sdk.projects.list, title=title, page_size=100)
        return [
            {"id": p.id, "title": p.title} for p in self.call("list projects", list, pager) if p.title == title
        ]

    def task_index(self, project_id: int) -> dict[int, list[int]]:
        """sample_id -> ids of the project's tasks carrying it (several = duplicates)."""
        out: dict[int, list[int]] = {}
        for task in self.tasks(project_id, "id,data"):
            sid = task.get("data", {}).get("sample_id")
            if sid is not None:
                out.setdefault(int(sid), []).append(int(task["id"]))
        for ids in out.values():
            ids.sort()
        return out

    def tasks(self, project_id: int, include: str, page_size: int = 5000, fields: str = "task_only") -> list[dict]:
        """All tasks of a project from the Data Manager list, only the ``include`` fields.

        Much cheaper than an export (no annotation columns are computed), so
        reconciling 10,000 tasks takes seconds, not minutes.
        """
        out: list[dict] = []
        page = 1
        while True:
            body = self.http("GET", "api/tasks/", f"list tasks of project {project_id}",
                             params={"project": project_id, "include": include, "page": page,
                                     "page_size": page_size, "fields": fields})
            out.extend(body["tasks"])
            if not body["tasks"] or len(out) >= body.get("total", 0):
                return out
            page += 1

    def export(self, project_id: int, *, all_tasks: bool, ids: list[int] | None = None) -> list[dict]:
        """Every task (or every annotated one; or those of ``ids``) with its annotations, as JSON."""
        params = {"exportType": "JSON", "download_all_tasks": "true" if all_tasks else "false"}
        if ids:
            params["ids[]"] = [str(i) for i in ids]
        what = f"export project {project_id}"

        def fetch():
            from label_studio_sdk.core.api_error import ApiError

            resp = self.sdk._client_wrapper.httpx_client.request(
                f"api/projects/{project_id}/export", method="GET", params=params
            )
            if resp.status_code >= 400:
                raise ApiError(status_code=resp.status_code, body=resp.text[:300], headers=dict())
            return json.loads(resp.content)

        return self.call(what, fetch)


def _short(body: Any, limit: int = 300) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
