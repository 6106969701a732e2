"""The Label Studio SDK behind one small class whose errors name the server, never the token.

Every call goes through ``Client.call``, which bounds how long a call may
take, retries what is safe to retry, and turns connection failures, rejected
tokens and missing objects into one-line ``LabelStudioError`` messages with
the URL and the fix. The token is held by the SDK only; it is never formatted
into a message or a log line.

Timeouts and retries. Every request has a connect timeout (default 10 s) and a
read timeout (default 60 s; an import of 10,000 tasks takes about 10 s),
settable as ``labelstudio_connect_timeout`` / ``labelstudio_timeout``. A failed
request is tried again, at most ``labelstudio_retries`` times (default 2),
after 0.5 s, 1 s, 2 s ... (capped, with jitter) or after the server's
``Retry-After`` when it sends one (429, 503), when it failed with a
connection error, a timeout, HTTP 5xx or 429. The SDK's own retries are
turned off: it would repeat a POST after a 5xx or a broken connection.

What is not repeated blindly: a request that changes something on the server
and is not idempotent (an import, creating a project, a view, a storage)
is retried only when it surely never reached the server (the connection was
never made) or the server refused it before doing anything (429). After a
timeout, a dropped connection or a 5xx the server may have done it (Label
Studio does not de-duplicate imports), so the call fails with one line that
says to run the command again: push then reconciles with what the server
has by sample id (projects by title, views and storages by name) and
imports nothing twice. Retrying there would duplicate tasks; not retrying
costs one rerun that finds the work done.
"""

from __future__ import annotations

import email.utils
import json
import random
import sys
import time
from typing import Any, Callable

from curator.exceptions import LabelStudioError, MissingExtraError, ValidationError

#: HTTP answers worth another try: too many requests, and the server's own failures.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
BACKOFF_S = 0.5  # first wait; doubled each time
MAX_BACKOFF_S = 8.0
MAX_RETRY_AFTER_S = 60.0  # a server asking for a longer wait gets an error naming it instead
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: The smallest page of a listing read in parallel: each page also costs the server its counts
#: over the whole selection, so pages of a few tasks would cost more than they save.
MIN_PAGE = 500


class NotOnServer(LabelStudioError):
    """The server answered 404: the project or task is gone (deleted by hand)."""


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's Retry-After, else
    exponential with +-20 % jitter, so several clients do not come back in step."""
    if retry_after is not None:
        return retry_after
    return min(BACKOFF_S * 2 ** attempt, MAX_BACKOFF_S) * random.uniform(0.8, 1.2)


def retry_after(headers) -> float | None:
    """The ``Retry-After`` header in seconds (delta or HTTP date), or None."""
    if not headers:
        return None
    value = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    value = str(value).strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Client:
    """A connection to one Label Studio server (``url``) as the token's user."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 60.0, connect_timeout: float = 10.0,
                 retries: int = 2, note: Callable[[str], None] | None = None, parallel: int = 0):
        if not token:
            raise ValidationError(
                f"no API token for Label Studio at {url}: set CURATOR_LABELSTUDIO_TOKEN "
                "(or labelstudio_token in the config file)"
            )
        try:
            import httpx
            from label_studio_sdk.client import LabelStudio
        except ImportError:
            raise MissingExtraError("label-studio-sdk", "labelstudio") from None
        self.url = url.rstrip("/")
        self.timeout, self.connect_timeout, self.retries = float(timeout), float(connect_timeout), int(retries)
        if not parallel:
            from curator.integrations.labelstudio.server import per_core

            parallel = per_core()
        #: requests sent at once (pages of a listing, prediction batches): one per server process
        self.parallel = max(1, int(parallel))
        self.note = note if note is not None else (lambda m: print(m, file=sys.stderr, flush=True))
        http = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout), follow_redirects=True)
        self.sdk = LabelStudio(base_url=self.url, api_key=token, httpx_client=http, max_retries=0)

    @classmethod
    def from_settings(cls, settings) -> "Client":
        return cls(settings.labelstudio_url, settings.labelstudio_token, timeout=settings.labelstudio_timeout,
                   connect_timeout=settings.labelstudio_connect_timeout, retries=settings.labelstudio_retries,
                   parallel=settings.labelstudio_parallel)

    def call(self, what: str, fn: Callable, *args, idempotent: bool | None = None, **kwargs) -> Any:
        """Run one SDK call with the retries above; translate its failures into one-line errors.

        ``idempotent``: whether running it twice is harmless; by default every
        call is, except SDK methods named ``create*`` / ``import*``.
        """
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        if idempotent is None:
            idempotent = not getattr(fn, "__name__", "").startswith(("create", "import"))
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except httpx.TransportError as exc:
                # never connected: the server cannot have acted on it, so even a POST may go again
                unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                reason = self._reason(exc)
                if attempt < self.retries and (idempotent or unsent):
                    attempt = self._wait(what, reason, attempt, None)
                    continue
                if not idempotent and not unsent:
                    raise LabelStudioError(self._unconfirmed(what, reason)) from None
                raise LabelStudioError(
                    f"Label Studio at {self.url} does not answer ({what}: {reason}; {attempt + 1} "
                    f"tr{'y' if attempt == 0 else 'ies'} in {time.monotonic() - started:.0f} s); check that it runs "
                    "(curator labelstudio status, or start it: curator labelstudio up) and that "
                    f"CURATOR_LABELSTUDIO_URL points to it; a slow server may need a longer "
                    f"CURATOR_LABELSTUDIO_TIMEOUT (now {self.timeout:g} s)"
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
                if code in RETRY_STATUS:
                    wait = retry_after(exc.headers)
                    if wait is not None and wait > MAX_RETRY_AFTER_S:
                        raise LabelStudioError(
                            f"Label Studio at {self.url} is busy ({what}: HTTP {code}) and asks to come back in "
                            f"{wait:.0f} s; run the command again later"
                        ) from None
                    if attempt < self.retries and (idempotent or code == 429):  # 429: refused, nothing done
                        attempt = self._wait(what, f"HTTP {code}", attempt, wait)
                        continue
                    if not idempotent:
                        raise LabelStudioError(self._unconfirmed(what, f"HTTP {code}: {_short(exc.body)}")) from None
                    raise LabelStudioError(
                        f"Label Studio at {self.url}: {what} failed with HTTP {code} after {attempt + 1} "
                        f"tr{'y' if attempt == 0 else 'ies'}: {_short(exc.body)}; check the server's log "
                        "(curator labelstudio status names its data folder) and run the command again"
                    ) from None
                raise LabelStudioError(
                    f"Label Studio at {self.url}: {what} failed with HTTP {code}: {_short(exc.body)}"
                ) from None

    def _reason(self, exc) -> str:
        import httpx

        if isinstance(exc, httpx.ConnectTimeout):
            return f"no connection within {self.connect_timeout:g} s"
        if isinstance(exc, httpx.ReadTimeout):
            return f"no answer within {self.timeout:g} s"
        if isinstance(exc, httpx.ConnectError):
            return "connection refused or host unreachable"
        if isinstance(exc, httpx.RemoteProtocolError):
            return "the server closed the connection without an answer"
        return type(exc).__name__

    def _wait(self, what: str, reason: str, attempt: int, server_wait: float | None) -> int:
        delay = backoff(attempt, server_wait)
        self.note(f"Label Studio at {self.url}: {what}: {reason}; trying again in {delay:.1f} s "
                  f"({attempt + 1}/{self.retries})")
        time.sleep(delay)
        return attempt + 1

    def _unconfirmed(self, what: str, reason: str) -> str:
        return (
            f"Label Studio at {self.url} did not confirm {what} ({reason}); it may have done it, so curator "
            "does not repeat it blindly: check that the server runs and run the same command again (push "
            "finds what the server already has by sample id and imports nothing twice)"
        )

    # -- raw HTTP for the few endpoints whose SDK models are slow or missing -------------
    def http(self, method: str, path: str, what: str, **kwargs) -> Any:
        """One request through the SDK's authenticated httpx client; JSON body back."""
        from label_studio_sdk.core.api_error import ApiError

        wrapper = self.sdk._client_wrapper

        def send():
            if "files" in kwargs:
                resp = wrapper.httpx_client.request(path, method=method, **kwargs)
            else:  # straight to httpx: the SDK walks a JSON body object by object (jsonable_encoder),
                # a second per batch of 2,000 tasks; a body given as bytes was encoded once already
                kw = dict(kwargs)
                headers = wrapper.get_headers()
                if "json" in kw:
                    body = kw.pop("json")
                    kw["content"] = body if isinstance(body, bytes) else json.dumps(body).encode()
                    headers["Content-Type"] = "application/json"
                resp = wrapper.httpx_client.httpx_client.request(method, f"{self.url}/{path.lstrip('/')}",
                                                                 headers=headers, **kw)
            if resp.status_code >= 400:
                try:
                    body = resp.json()
                except ValueError:
                    body = resp.text
                raise ApiError(status_code=resp.status_code, body=body, headers=dict(resp.headers))
            if not resp.content:
                return None
            return resp.json()

        return self.call(what, send, idempotent=method.upper() in IDEMPOTENT_METHODS)

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
        return index_by_sample(self.tasks(project_id, "id,data"))

    def tasks(self, project_id: int, include: str, page_size: int = 5000, fields: str = "task_only",
              filters: list[dict] | None = None, conjunction: str = "and", annotations: bool = False,
              expected: int | None = None) -> list[dict]:
        """All tasks of a project from the Data Manager list, only the ``include`` fields.

        Much cheaper than an export (no annotation columns are computed), so
        reconciling 10,000 tasks takes seconds, not minutes. ``filters``: Data Manager filter
        items (``conjunction``: all or any must hold), applied by the server before it
        serialises anything.

        ``annotations``: each task's annotations too, as ``annotations`` (name their fields in
        ``include`` as ``annotations.<field>``). They come through the list's ``expand`` (one
        annotation serialiser for the whole page), not ``fields=all`` alone: that builds a new
        serialiser, every model field of it, per task, 5 times the server's CPU for the same
        answers (profiled on Label Studio 1.23.2, 2026-12-01). A listing that does not read
        ``data`` asks the server not to resolve its media URLs (``resolve_uri``, ~10 % of a listing).

        ``expected``: about how many tasks the listing holds (a count the caller has); given, the
        pages are read ``parallel`` at once (``_pages_at_once``), else one after the other.
        """
        extra: dict[str, str] = {} if "data" in include.split(",") else {"resolve_uri": "false"}
        if filters:
            extra["query"] = json.dumps({"filters": {"conjunction": conjunction, "items": filters}})
        if annotations:
            extra.update(fields="all", expand="annotations")
        # ``review`` (data_manager/api.py TaskListAPI.get): with an ML backend connected
        # (``evaluate_predictions_automatically``), Label Studio otherwise asks it for the prediction
        # of every listed task that has none and stores them (a reconciliation of 10,000 tasks would
        # predict them all). The task's own columns and, with ``fields=all``, its annotations come
        # back the same (it skips the Data Manager's computed columns: no faster, 2026-12-01).
        extra["review"] = "true"

        def page(number: int, size: int) -> dict | None:
            try:
                return self.http("GET", "api/tasks/", f"list tasks of project {project_id}",
                                 params={"project": project_id, "include": include, "page": number,
                                         "page_size": size, "fields": fields, **extra})
            except NotOnServer:
                if number == 1:
                    raise
                return None  # a page past the end (Label Studio answers 404); page 1 says the project exists

        if expected is not None and self.parallel > 1:
            out = self._pages_at_once(page, page_size, expected)
            if out is not None:
                return out
        out = []
        number = 1
        while True:
            body = page(number, page_size)
            tasks = body["tasks"] if body else []
            out.extend(tasks)
            if not tasks or len(out) >= body.get("total", 0):
                return out
            number += 1

    def _pages_at_once(self, page: Callable, page_size: int, expected: int) -> list[dict] | None:
        """A listing of about ``expected`` tasks in ``parallel`` pages read at once (one per server
        process), or None when the pages do not prove it whole (the caller reads it page by page).

        Whole means: every page reports the same ``total`` (nothing was added or removed while
        they were read), the tasks' ids are distinct and there are ``total`` of them. Pages past
        what ``expected`` foresaw are read at once too, once the first answers give the total.
        """
        from concurrent.futures import ThreadPoolExecutor

        size = max(MIN_PAGE, min(page_size, -(-max(expected, 1) // self.parallel)))
        bodies: dict[int, dict | None] = {}
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="ls-pages") as pool:
            wanted = range(1, -(-max(expected, 1) // size) + 1)
            while True:
                bodies.update(zip(wanted, pool.map(lambda n: page(n, size), wanted)))
                totals = {b.get("total") for b in bodies.values() if b is not None}
                if len(totals) != 1:
                    return None
                total = int(totals.pop() or 0)
                last = -(-total // size)
                if last <= max(bodies):
                    break
                wanted = range(max(bodies) + 1, last + 1)
        out = [t for n in sorted(bodies) if bodies[n] is not None for t in bodies[n]["tasks"]]
        if len(out) != total or len({int(t["id"]) for t in out}) != total:
            return None
        return out

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
                raise ApiError(status_code=resp.status_code, body=resp.text[:300], headers=dict(resp.headers))
            return json.loads(resp.content)

        return self.call(what, fetch)


def _short(body: Any, limit: int = 300) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def index_by_sample(tasks: list[dict]) -> dict[int, list[int]]:
    """sample_id -> ids of the listed tasks carrying it (``data.sample_id``), sorted."""
    out: dict[int, list[int]] = {}
    for task in tasks:
        sid = (task.get("data") or {}).get("sample_id")
        if sid is not None:
            out.setdefault(int(sid), []).append(int(task["id"]))
    for ids in out.values():
        ids.sort()
    return out
