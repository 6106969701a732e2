"""curator as a Label Studio ML backend: health, setup, predict and the annotation webhook.

Label Studio (ml/api_connector.py) calls ``GET /health``, ``POST /setup``
(``{"project": "<id>.<created>", "schema": <label config>, ...}``, answered
with ``{"model_version": ...}``) when a backend is connected and before it
asks for predictions, and ``POST /predict`` (``{"tasks": [...], "project":
..., "label_config": ...}``, answered with ``{"results": [one prediction per
task]}``) when a labeler opens a task without a prediction (project setting
``evaluate_predictions_automatically``) or "Retrieve predictions" is run.
``POST /webhook`` receives the annotation events (``webhooks.Receiver``).

A prediction is curator's own: the newest stored prediction of the sample
(``score`` / ``select`` store the model's class and confidence as scores),
else one computed then with the dataset's newest saved model, which stays
loaded until a newer one is recorded. ``model_version`` is that model's
``name:version``. Nothing is written for predictions: Label Studio stores
what it fetched.

Why the standard library's ``ThreadingHTTPServer`` and not ``label-studio-ml``:
its newest release here (1.0.9) pins Flask 1.1.2, Werkzeug 2.0.2 and Jinja2
3.0.3, a downgrade of the Jinja2 3.1 that curator's environment has; and
Starlette/Hypercorn come only with the fiftyone extra. The protocol is four
JSON endpoints; the standard library serves them with no new dependency.
It binds 127.0.0.1 by default: /predict and /setup are unauthenticated reads
(as in label-studio-ml), /webhook needs the shared secret.
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from curator.exceptions import CuratorError
from curator.integrations.labelstudio import TOOL
from curator.integrations.labelstudio.webhooks import Receiver, secret_ok

MAX_BODY = 64 * 1024 * 1024  # a predict request for thousands of tasks fits; more is refused (413)
NO_MODEL = "curator:no-model"


class Predictor:
    """Predictions for tasks of dataset ``dataset`` (see module docstring)."""

    def __init__(self, settings, dataset: str):
        self.settings, self.dataset = settings, dataset
        self._model = None  # (model id, TrainedModel)
        self._load = threading.Lock()

    def _newest(self):
        from curator.store import models as store_models
        from curator.store.session import transaction

        with transaction(self.settings) as s:
            return store_models.newest_trained_on(s, self.dataset)

    def model_version(self) -> str:
        info = self._newest()
        return NO_MODEL if info is None else f"{info.name}:{info.version}"

    def _loaded(self):
        """The newest saved model of the dataset, loaded once per model id; None when there is none."""
        info = self._newest()
        if info is None:
            return None
        with self._load:
            if self._model is None or self._model[0] != info.id:
                from curator import rounds

                self._model = (info.id, rounds.load_model(self.settings, info.id), f"{info.name}:{info.version}")
            return self._model

    def predict(self, tasks: list[dict], project_uid: str | None) -> list[dict]:
        """One Label Studio prediction per task: ``{"result": [...], "score", "model_version"}``."""
        from curator.store import annotations as store
        from curator.store.queries import dataset_id
        from curator.store.session import transaction

        external = int(str(project_uid).split(".")[0]) if project_uid else None
        sids = {int(t["id"]): _sample_id(t) for t in tasks}
        wanted = [sid for sid in sids.values() if sid is not None]
        with transaction(self.settings) as s:
            project = store.project_by_external_id(s, TOOL, external) if external is not None else None
            ds = store.dataset_info(s, dataset_id(s, self.dataset))
            stored = store.stored_predictions(s, wanted)
            versions = {mid: store.model_label(s, mid) for mid in {m for _, _, m in stored.values()}}
            files = store.sample_files(s, [sid for sid in wanted if sid not in stored])
        from_name, to_name = (project.from_name, project.to_name) if project else ("label", "image")
        got: dict[int, tuple[str, float, str]] = {
            sid: (ds.classes[k], conf, versions[mid] or NO_MODEL)
            for sid, (k, conf, mid) in stored.items() if 0 <= k < len(ds.classes)
        }
        missing = [sid for sid in wanted if sid not in got and sid in files]
        if missing:
            got.update(self._compute(missing, files))
        out = []
        for tid, sid in sids.items():
            if sid in got:
                label, score, version = got[sid]
                result = [{"from_name": from_name, "to_name": to_name, "type": "choices",
                           "value": {"choices": [label]}}]
                out.append({"result": result, "score": round(float(score), 6), "model_version": version})
            else:  # not a curator task, or no model yet: an empty prediction keeps results aligned with tasks
                out.append({"result": [], "score": 0.0, "model_version": NO_MODEL})
        return out

    def _compute(self, sample_ids: list[int], files: dict[int, tuple[str, str]]) -> dict[int, tuple[str, float, str]]:
        from curator.images import load_images

        loaded = self._loaded()
        if loaded is None:
            return {}
        _, model, version = loaded
        probs = model.adapter.predict_proba(load_images([files[sid][0] for sid in sample_ids]))
        best = probs.argmax(1)
        return {sid: (str(model.classes[int(k)]), float(probs[i, k]), version)
                for i, (sid, k) in enumerate(zip(sample_ids, best))}


def _sample_id(task: dict) -> int | None:
    value = (task.get("data") or {}).get("sample_id")
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


class Backend(ThreadingHTTPServer):
    """The HTTP server; ``predictor`` and ``receiver`` do the work, ``secret`` guards /webhook."""

    daemon_threads = True

    def __init__(self, settings, dataset: str, secret: str, host: str = "127.0.0.1", port: int = 9090,
                 client=None, log=None):
        self.predictor = Predictor(settings, dataset)
        self.receiver = Receiver(settings, client)
        self.secret = secret
        self.calls: collections.Counter = collections.Counter()  # requests per path (tests, `status`)
        self.webhook_seconds: collections.deque = collections.deque(maxlen=10_000)  # receiver time per event
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> threading.Thread:
        """Serve in a daemon thread (tests, the benchmark, the live loop); stop with ``shutdown()``."""
        thread = threading.Thread(target=self.serve_forever, name="curator-ls-backend", daemon=True)
        thread.start()
        return thread

    def answer(self, method: str, path: str, headers, body: dict | None) -> tuple[int, dict]:
        path = path.split("?", 1)[0].rstrip("/") or "/"
        self.calls[path] += 1
        if method == "GET" and path in ("/", "/health"):
            return 200, {"status": "UP", "model_class": "curator", "dataset": self.predictor.dataset}
        if method != "POST":
            return 404, {"error": f"no GET {path}"}
        if path == "/webhook":
            if not secret_ok(self.secret, headers):
                return 403, {"error": "missing or wrong webhook secret"}
            started = time.perf_counter()
            answer = self.receiver.handle(body or {})
            self.webhook_seconds.append(time.perf_counter() - started)
            return 200, answer
        if path == "/setup":
            return 200, {"model_version": self.predictor.model_version()}
        if path == "/predict":
            results = self.predictor.predict((body or {}).get("tasks") or [], (body or {}).get("project"))
            versions = {r["model_version"] for r in results} - {NO_MODEL}
            return 200, {"results": results, "model_version": min(versions) if versions else NO_MODEL}
        if path in ("/validate", "/train"):  # accepted, nothing to do: curator trains in its own loop
            return 200, {}
        return 404, {"error": f"no POST {path}"}


class _Handler(BaseHTTPRequestHandler):
    server: Backend
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet: one line per failure only, never headers
        pass

    def _serve(self, method: str) -> None:
        body: Any = None
        if method == "POST":
            size = int(self.headers.get("Content-Length") or 0)
            if size > MAX_BODY:
                return self._send(413, {"error": f"request over {MAX_BODY} bytes"}, close=True)
            raw = self.rfile.read(size) if size else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                return self._send(400, {"error": "body is not JSON"})
        try:
            code, answer = self.server.answer(method, self.path, self.headers, body)
        except CuratorError as exc:
            self.server.log(f"curator backend: {method} {self.path.split('?')[0]}: {exc}")
            code, answer = 500, {"error": str(exc)}
        except Exception as exc:  # a bug: say so in one line and keep serving the others
            self.server.log(f"curator backend: {method} {self.path.split('?')[0]} failed: {type(exc).__name__}: {exc}")
            code, answer = 500, {"error": f"{type(exc).__name__}: {exc}"}
        self._send(code, answer)

    def _send(self, code: int, answer: dict, close: bool = False) -> None:
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._serve("GET")

    def do_POST(self):  # noqa: N802
        self._serve("POST")


def connect(settings, project: str, url: str, *, title: str = "curator", client=None) -> dict:
    """Register the backend at ``url`` with the Label Studio project ``project`` (recorded by push):
    the webhook first (with the secret), then the ML backend (Label Studio calls /health and /setup
    now, and skips its own catch-all webhook since ours has the URL), and turn on predictions for
    tasks opened without one. Idempotent: run again, it updates what exists."""
    from curator.exceptions import NotFoundError
    from curator.integrations.labelstudio.client import Client
    from curator.integrations.labelstudio.webhooks import register, require_secret
    from curator.store import annotations as store
    from curator.store.session import transaction

    secret = require_secret(settings)
    with transaction(settings) as s:
        row = store.project(s, TOOL, project)
    if row is None:
        raise NotFoundError(f"no Label Studio project {project!r} in the database; push a round to it first")
    client = client or Client.from_settings(settings)
    pid, url = row.external_id, url.rstrip("/")
    hook = register(client, pid, f"{url}/webhook", secret)
    backends = client.http("GET", "api/ml/", "list ML backends", params={"project": pid}) or []
    same = [b for b in backends if str(b.get("url", "")).rstrip("/") == url]
    if same:
        ml_id = int(same[0]["id"])
        # "project" too: Label Studio 1.23 validates an update by calling the backend's /setup with the
        # request's fields, and fails (HTTP 500) without it
        client.http("PATCH", f"api/ml/{ml_id}", "update the ML backend", json={"url": url, "title": title,
                                                                              "project": pid})
    else:
        ml_id = int(client.http("POST", "api/ml/", "connect the ML backend",
                                json={"url": url, "project": pid, "title": title, "is_interactive": False})["id"])
    # model_version "": the labeling UI then shows every prediction (Label Studio filters them by the
    # project's model_version, which it sets to the backend's title); curator's carry their own version.
    client.http("PATCH", f"api/projects/{pid}", "turn on predictions",
                json={"evaluate_predictions_automatically": True, "show_collab_predictions": True,
                      "model_version": ""})
    return {"project": project, "project_id": pid, "ml_backend_id": ml_id, "webhook_id": hook, "url": url}
