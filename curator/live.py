"""The live loop: a short queue in Label Studio that follows the model (issue 17, item 3).

``curator loop --labeler labelstudio --live`` runs curator's ML backend and
webhook receiver in this process, connects them to the project, and then:

1. answers arrive by webhook and are in the database at once (``webhooks``);
2. after every K new answers (``--retrain-every``) it retrains on every label,
   scores the pool and selects a top-up round that brings the queue back to
   its size; one read -> compute -> write step per part (``run_step``);
3. it re-ranks the whole queue (unstarted tasks and the top-up) by the new
   model's uncertainty (margin), records that order as a *generation*, pushes
   the top-up (push's reconcile-by-sample-id), gives every queued task the
   generation's prediction scored ``1 - margin`` and sets the project's
   ``model_version`` to it with uncertainty sampling (``SAMPLING``): so the next
   task Label Studio serves a labeler (*Label All Tasks*) is the newest model's
   first pick. A thread then writes the order to the tasks' ``data.rank``, which
   the project's "live queue" tab sorts by (display, "Label Tasks As Displayed").

Re-rank, never remove. A queued task that no labeler has answered may still be
open in someone's editor (Label Studio locks it for them; Community has no
"delete if nobody has it open"), so deleting it could throw away their work.
The queue is short, so a task that the new model ranks low costs little: it
moves to the back of the queue and is answered last.

The queue is not a second list: it is the items of the dataset's open rounds
without a live answer (``store.live.queue``). So a sample is in it once (a
sample is in one open round at most; push links it to one task per project,
unique in the database), and a loop killed anywhere (SIGKILL included) loses
nothing: on start it pushes every open round again (push finds what the
server already has by sample id), pulls (answers given while it was down),
and writes the newest generation's order again. A round selected but not yet
pushed when the loop died is still open, so it is pushed then; one whose
answers are all in is closed (``labeled``).

Queue size (``queue_size``): K answers trigger a retrain; while it runs
(T seconds, the last generation's measured time) the labelers answer
``pace x T`` more; each labeler also holds one task open. A queue shorter than
``K + pace x T + labelers`` runs dry before the new ranking lands; a longer one
only serves more tasks ranked by an older model. At least ``PER_LABELER`` per
labeler. The pace is the labelers' answers per minute over their last
``PACE_ANSWERS`` answers (created times, as Label Studio stamps them).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import signal
import threading
import time

import numpy as np

from curator.exceptions import CuratorError, ValidationError
from curator.integrations.labelstudio import TOOL
from curator.steps import run_step

DEFAULT_RETRAIN_EVERY = 10
#: Warm retrain (``LiveLoop._train``): passes over the labels, a floor of steps, the CNN's batch.
WARM_EPOCHS = 5
WARM_MIN_STEPS = 20
WARM_MAX_STEPS = 100  # bounded: a retrain's cost must not grow with every label (~0.1-0.3 CPU s a step)
BATCH = 64
PER_LABELER = 3
CANDIDATES_PER_PICK = 50  # pool samples scored per top-up pick (``candidates``)
MIN_CANDIDATES = 500
MC_SAMPLES = 20  # MC-dropout passes of a top-up, only for a policy that needs them (``live_mc_samples``)
PACE_ANSWERS = 50
#: Seconds between reconciliation pulls while the loop runs (webhooks carry the answers; a pull
#: catches one Label Studio failed to deliver: it does not retry).
PULL_EVERY_S = 60.0
VIEW_TITLE = "live queue"
#: The live tab: tasks by ``data.rank``, compared as numbers (Label Studio compares a data field as text
#: unless the tab says the column is a Number: rank 10 would come before rank 2).
VIEW_DATA = {"title": VIEW_TITLE, "ordering": ["tasks:data.rank"],
             "columnsDisplayType": {"tasks:data.rank": "Number"}}
#: The project's sampling once a model ranks the queue: Label Studio's "Label All Tasks" stream ignores a
#: tab's order (the Data Manager drops it from the request) and serves, under sequential sampling, the
#: lowest task id; under uncertainty sampling it serves the task whose prediction of the project's
#: ``model_version`` has the lowest score. So each generation gives every queued task a prediction of its
#: own version scored ``1 - margin`` (the gap between the two likeliest classes): lowest first is the
#: queue's order, and "Label Tasks As Displayed" on the live tab (``data.rank``) serves the same.
SAMPLING = "Uncertainty sampling"
#: Fault injection for the kill tests: ``<stage>:<generation>`` sends this process SIGKILL just
#: before ``stage`` of that generation (stages: ``KILL_STAGES``).
KILL_ENV = "CURATOR_LIVE_KILL_AT"
KILL_STAGES = ("select", "record", "push", "rank")


def _kill_point(stage: str, generation: int) -> None:
    if os.environ.get(KILL_ENV) == f"{stage}:{generation}":
        os.kill(os.getpid(), signal.SIGKILL)


def queue_size(retrain_every: int, per_min: float, retrain_s: float, labelers: int,
               per_labeler: int = PER_LABELER) -> int:
    """COMPUTE: the queue that lasts from one re-ranking to the next (module docstring)."""
    labelers = max(1, int(labelers))
    need = int(retrain_every) + math.ceil(max(per_min, 0.0) * max(retrain_s, 0.0) / 60.0) + labelers
    return max(need, per_labeler * labelers)


def pace(times: list[tuple[str | None, dt.datetime]]) -> tuple[float, int]:
    """COMPUTE: (answers per minute, labelers) from (annotator, created_at) of recent answers."""
    if not times:
        return 0.0, 1
    labelers = len({who for who, _ in times}) or 1
    stamps = sorted(t.replace(tzinfo=None) if t.tzinfo is None else t.astimezone(dt.timezone.utc).replace(tzinfo=None)
                    for _, t in times)
    span = (stamps[-1] - stamps[0]).total_seconds()
    if len(stamps) < 2 or span <= 0:
        return 0.0, labelers
    return (len(stamps) - 1) / span * 60.0, labelers


def rank_queue(sample_ids: list[int], probs: np.ndarray | None) -> list[tuple[int, float | None]]:
    """COMPUTE: the queue, most uncertain first by the model's margin (ties: the given order);
    no model yet: the given order."""
    if probs is None or not len(sample_ids):
        return [(int(s), None) for s in sample_ids]
    from curator.scores import margin

    m = margin(probs)
    order = sorted(range(len(sample_ids)), key=lambda i: (-m[i], i))
    return [(int(sample_ids[i]), float(m[i])) for i in order]


def candidates(need: int, subsample: int | None) -> int:
    """COMPUTE: how many pool samples a top-up of ``need`` scores (a seeded random subsample, drawn afresh
    each round): ``CANDIDATES_PER_PICK`` per pick, at least ``MIN_CANDIDATES``, never more than
    ``--subsample``. A top-up picks a few (``need`` ~ K), and scoring is most of its cost, linear in the
    candidates; 50 per pick still reaches the top 2 % of the pool's uncertainty for each."""
    n = max(CANDIDATES_PER_PICK * max(int(need), 1), MIN_CANDIDATES)
    return n if subsample is None else min(int(subsample), n)


def live_mc_samples(model, policy: str) -> int:
    """MC-dropout passes for a top-up: none unless ``policy`` needs them (bald, powerbald). The queue is
    ranked by margin (``rank_queue``), so the top-up is picked by the same uncertainty (``curator``'s is
    BALD with passes, margin without); 20 passes were two thirds of a refresh's scoring."""
    from curator import rounds

    needs = "mc_probs" in rounds.policy_from(policy).requires
    return rounds.mc_samples_for(model, policy, MC_SAMPLES if needs else 0, explicit=False)


class _Clock:
    """Wall and CPU seconds of each part of a refresh (CPU: this process, every thread)."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._w, self._c = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        w, c = time.perf_counter(), time.process_time()
        self.wall[name], self.cpu[name] = w - self._w, c - self._c
        self._w, self._c = w, c


@dataclasses.dataclass
class LiveConfig:
    dataset: str
    project: str | None = None
    queue: int | None = None  # None: from the labelers' pace (queue_size)
    retrain_every: int = DEFAULT_RETRAIN_EVERY
    policy: str = "curator"
    seed: int = 0
    initial: int = 20
    pool_split: str | None = "train"
    subsample: int | None = 2000
    epochs: int | None = None
    model: str | None = None
    weights: str | None = None
    host: str = "127.0.0.1"
    port: int = 9090
    callback_url: str | None = None  # how Label Studio reaches this process (default http://host:port)
    poll_s: float = 0.2
    until_labels: int | None = None  # stop once this many labels are in and ranked (tests, benchmarks)

    def check(self) -> None:
        if self.retrain_every < 1:
            raise ValidationError(f"--retrain-every must be >= 1 answer; got {self.retrain_every}")
        if self.queue is not None and self.queue < 1:
            raise ValidationError(f"--queue must be >= 1 task; got {self.queue}")
        if not 0 <= self.port <= 65535:
            raise ValidationError(f"--port must be in 0..65535; got {self.port}")


class LiveLoop:
    """One live loop over one project; ``run`` until ``stop`` is set (or ``until_labels``)."""

    def __init__(self, settings, cfg: LiveConfig, *, client=None, log=None):
        from curator.integrations.labelstudio.push import default_project_name

        cfg.check()
        self.settings, self.cfg = settings, cfg
        self.project = cfg.project or default_project_name(cfg.dataset)
        self.client = client
        self.log = log or (lambda m: None)
        self.backend = None
        self.ds = None
        self.project_id = None  # curator's row id of the project
        self.external_id = None  # Label Studio's
        self.view_id = None
        self.generations = 0  # made by this process
        self.phases: dict[str, float] = {}  # wall seconds of each part of the newest refresh (benchmark)
        self.phases_cpu: dict[str, float] = {}  # and its CPU seconds
        self._task_data: dict[int, dict] = {}  # task id -> its data as on the server (only this process edits it)
        self._version: str | None = None  # the project's model_version as this process last read or wrote it
        self._order_lock = threading.Lock()  # one writer of data.rank at a time
        self._order_due, self._order_stop = threading.Event(), threading.Event()
        self._order_thread: threading.Thread | None = None
        self.ordered: tuple[int, float] | None = None  # (generation, perf_counter) of the last order written

    # -- set-up and reconciliation ------------------------------------------------------------
    def open(self) -> None:
        from curator.integrations.labelstudio.backend import Backend
        from curator.integrations.labelstudio.client import Client
        from curator.integrations.labelstudio.webhooks import require_secret
        from curator.store.queries import dataset_id

        secret = require_secret(self.settings)
        self.client = self.client or Client.from_settings(self.settings)
        self.client.check()
        self.ds = run_step(self.settings, lambda s: dataset_id(s, self.cfg.dataset))
        try:
            self.backend = Backend(self.settings, self.cfg.dataset, secret, host=self.cfg.host, port=self.cfg.port,
                                   client=self.client, log=self.log)
        except OSError as exc:
            raise ValidationError(f"cannot listen on {self.cfg.host}:{self.cfg.port} ({exc.strerror}); "
                                  "choose another --port") from None
        self.backend.start()
        try:
            self.reconcile()
        except BaseException:
            self.close()  # nothing left listening when the start fails (one error line from the CLI)
            raise
        self._embed_cold()
        try:  # torch's import (seconds) now, not between the K-th answer and the re-ranked queue
            import torch  # noqa: F401
        except ImportError:  # a --model that needs no torch
            pass

    def _embed_cold(self) -> None:
        """The dataset's cold-start embedding, stored once now (resumable; a complete set is kept): every
        top-up's duplicate check reads it instead of embedding its candidates from the images again, which
        was most of a refresh's select phase (2,000 candidates: ~5 CPU s each time)."""
        from curator.embeddings import ColdStartEmbedder, compute_embeddings
        from curator.store import samples as store_samples

        if run_step(self.settings, lambda s: len(store_samples.ids(s, self.ds))) <= MIN_CANDIDATES:
            return  # a pool this small is embedded in a moment each time: nothing kept on disk for it
        compute_embeddings(self.settings, self.cfg.dataset, ColdStartEmbedder())

    def reconcile(self) -> None:
        """Bring the server to what the database says (after a start, or a kill): the seed round,
        every open round pushed, webhook and backend connected, missed answers pulled, the newest
        generation's order on the tasks."""
        from curator.integrations.labelstudio.backend import connect
        from curator.loop import seed_round
        from curator.store import annotations as store_ann
        from curator.store import live as store_live
        from curator.store import rounds as store_rounds

        if run_step(self.settings, lambda s: store_rounds.find(s, self.ds, 0)) is None:
            seed_round(self.settings, self._loop_config(), self.ds)
        self._push_open()
        row = run_step(self.settings, lambda s: store_ann.project(s, TOOL, self.project))
        self.project_id, self.external_id = row.id, row.external_id
        url = self.cfg.callback_url or self.backend.url
        connect(self.settings, self.project, url, client=self.client)
        self._version = ""  # connect clears the project's model_version: the newest predictions go again
        self.view_id = self._ensure_view()
        self._pull()
        latest = run_step(self.settings, lambda s: store_live.latest_generation(s, self.project_id))
        if latest is None:  # generation 0: the seed round, in its own order, no model yet
            self._record(None, None, time.perf_counter(), self._target_size())
        self._apply_ranks()

    def _pull(self) -> None:
        """The reconciliation pull, one at a time with the receiver's events: the project's database lock
        is per process, so within this one the receiver's own lock keeps pull and webhook apart."""
        from curator.integrations.labelstudio.pull import pull

        with self.backend.receiver._lock:  # noqa: SLF001 - the receiver's per-process event lock
            pull(self.settings, self.project, client=self.client)

    def _loop_config(self):
        from curator.loop import LoopConfig

        c = self.cfg
        return LoopConfig(dataset=c.dataset, initial=c.initial, policy=c.policy, seed=c.seed, labeler="labelstudio",
                          pool_split=c.pool_split, epochs=c.epochs, project=self.project, subsample=c.subsample,
                          model=c.model, weights=c.weights)

    def _push_open(self, only: int | None = None) -> None:
        """Push the open rounds (``only``: that one): push imports what the server lacks, by sample id."""
        from curator.integrations.labelstudio.push import push
        from curator.store import live as store_live

        numbers = [only] if only is not None else run_step(self.settings,
                                                            lambda s: store_live.open_live_rounds(s, self.ds))
        for number in numbers:  # predictions={}: a queued task's prediction is its generation's
            # (``_apply_predictions``), not the round's, which would point the project's model_version
            # (the sampling's key) at the top-up alone until the generation's are in
            push(self.settings, self.cfg.dataset, number, project=self.project, client=self.client, predictions={})

    def _ensure_view(self) -> int:
        views = self.client.call("list views", self.client.sdk.views.list, project=self.external_id)
        for v in views:
            if (v.data or {}).get("title") == VIEW_TITLE:
                if (v.data or {}).get("columnsDisplayType") != VIEW_DATA["columnsDisplayType"]:  # a tab made
                    # before ranks sorted as numbers: "10" sorts before "2" as text
                    self.client.http("PATCH", f"api/dm/views/{v.id}", "update the live tab",
                                     json={"project": self.external_id, "data": VIEW_DATA})
                return v.id
        return self.client.call("create view", self.client.sdk.views.create, project=self.external_id,
                                data=VIEW_DATA).id

    def _apply_ranks(self, model=None) -> int:
        """The newest generation's order on the server, now: ``_follow`` then ``_write_ranks``."""
        self._follow(model)
        return self._write_ranks()

    def _follow(self, model=None) -> None:
        """Once a model ranks the queue: its order as predictions the labeling stream follows
        (``SAMPLING``); from then on the next task served is the order's first. ``model``: the
        generation's model when the caller has it loaded."""
        from curator.store import annotations as store_ann
        from curator.store import live as store_live

        def read(s):
            g = store_live.latest_generation(s, self.project_id)
            label = store_ann.model_label(s, g.model_id) if g.model_id is not None else None
            return g, label, store_live.ranks_of(s, g.id), store_ann.links(s, TOOL, self.project)

        gen, label, ranks, links = run_step(self.settings, read)
        if label is not None:
            self._apply_predictions(gen, label, ranks, links, model)

    def _write_ranks(self) -> int:
        """Write the newest generation's order to the tasks' ``data.rank`` (only where it differs; the live
        tab shows it, "Label Tasks As Displayed" follows it); how many tasks changed. One PATCH per task
        (Label Studio has no bulk update of task data), so a refresh leaves it to ``_order_worker``."""
        from curator.store import annotations as store_ann
        from curator.store import live as store_live

        def read(s):
            g = store_live.latest_generation(s, self.project_id)
            return g.number, store_live.ranks_of(s, g.id), store_ann.links(s, TOOL, self.project)

        with self._order_lock:
            number, ranks, links = run_step(self.settings, read)
            changed = 0
            for position, (sid, _) in enumerate(ranks):
                tid = links.get(sid)
                if tid is None:
                    continue
                if tid not in self._task_data:  # read once; afterwards this process wrote it
                    self._task_data[tid] = dict(self.client.http("GET", f"api/tasks/{tid}", f"read task {tid}")
                                                .get("data") or {})
                data = self._task_data[tid]
                if data.get("rank") != position:
                    data = {**data, "rank": position}
                    self.client.http("PATCH", f"api/tasks/{tid}", f"re-rank task {tid}", json={"data": data})
                    self._task_data[tid] = data
                    changed += 1
            self.ordered = (number, time.perf_counter())
            return changed

    def _order_worker(self) -> None:
        """Writes ``data.rank`` after each generation, off the path from the K-th answer to the next task
        (the stream already follows the predictions); a newer generation while it writes: again, newest."""
        while True:
            self._order_due.wait()
            if self._order_stop.is_set():
                return
            self._order_due.clear()
            try:
                self._write_ranks()
            except CuratorError as exc:  # the server away for a moment: again after the next generation
                self.log(f"live: writing the queue order failed ({exc}); written again with the next one")

    def _flush_order(self) -> None:
        """Stop the order writer; write the newest order now if it had one pending (a loop that stops)."""
        thread, self._order_thread = self._order_thread, None
        if thread is None:
            return
        pending = self._order_due.is_set()
        self._order_stop.set()
        self._order_due.set()
        thread.join()
        if pending:
            try:
                self._write_ranks()
            except CuratorError as exc:
                self.log(f"live: writing the queue order failed ({exc}); the next start writes it")

    def _apply_predictions(self, gen, label: str, ranks, links: dict[int, int], model=None) -> None:
        """Give each queued task generation ``gen``'s prediction (the model's class, scored ``1 - margin``
        as ranked) under the version ``<model> queue <n>``, one bulk import, then point the project's
        ``model_version`` and sampling at it (``SAMPLING``). Skipped when the project already names this
        version (a restarted loop: imported before the kill)."""
        version = f"{label} queue {gen.number}"
        if self._version is None:
            self._version = (self.client.http("GET", f"api/projects/{self.external_id}", "read the project")
                             or {}).get("model_version")
        if self._version == version:
            return
        queued = [(sid, score) for sid, score in ranks if sid in links and score is not None]
        if queued:
            from curator import rounds
            from curator.integrations.labelstudio.push import import_predictions
            from curator.rounds import predict_probs
            from curator.store import annotations as store_ann
            from curator.store import samples as store_samples

            def read(s):
                return store_ann.project(s, TOOL, self.project), store_samples.uris(s, [sid for sid, _ in queued])

            row, uris = run_step(self.settings, read)
            model = model if model is not None and model.model_id == gen.model_id else \
                rounds.load_model(self.settings, gen.model_id)
            best = predict_probs(model.adapter, uris).argmax(1)
            import_predictions(self.client, self.external_id, self.project, row,
                               [(links[sid], (str(model.classes[int(k)]), 1.0 - float(score), version))
                                for (sid, score), k in zip(queued, best)])
        self.client.http("PATCH", f"api/projects/{self.external_id}", "follow the newest generation",
                         json={"sampling": SAMPLING, "model_version": version})
        self._version = version

    # -- one generation -----------------------------------------------------------------------
    def _labels(self):
        from curator.store.queries import agreed_labels

        got = run_step(self.settings, lambda s: agreed_labels(s, self.ds))
        ids = sorted(got)
        return ids, [got[i][0] for i in ids]

    def _train(self, ids: list[int], labels: list[str]):
        """The generation's model: the built-in CNN, supervised, for ``--epochs`` (default ``WARM_EPOCHS``)
        passes over every label, ``WARM_MIN_STEPS`` to ``WARM_MAX_STEPS`` steps, warm-started from the
        newest generation's model: what earlier labels taught stays in the weights, so a retrain costs
        seconds, not the batch loop's recipe (200+ steps and pseudo-labels of the pool: minutes on two
        loaded cores). The first starts from nothing with the same steps (20 steps of 64 are 64 passes
        over 20 labels). A user's ``--model`` uses the loop's own training. A restarted loop starts from
        the same recorded model, so it trains the same weights."""
        from curator import rounds
        from curator.loop import train
        from curator.store import live as store_live

        if self.cfg.model is not None:
            return train(self.settings, self._loop_config(), ids, labels)
        previous = run_step(self.settings, lambda s: store_live.latest_generation(s, self.project_id)).model_id
        steps = min(WARM_MAX_STEPS, max(WARM_MIN_STEPS, (self.cfg.epochs or WARM_EPOCHS) * math.ceil(len(ids) / BATCH)))
        return rounds.train_model(self.settings, self.cfg.dataset, ids, labels, seed=self.cfg.seed, steps=steps,
                                  init=None if previous is None else rounds.load_model(self.settings, previous))

    def _target_size(self) -> int:
        from curator.store import live as store_live

        if self.cfg.queue is not None:
            return self.cfg.queue

        def read(s):
            g = store_live.latest_generation(s, self.project_id) if self.project_id else None
            return store_live.recent_answers(s, self.ds, PACE_ANSWERS), (g.seconds if g else 0.0)

        times, retrain_s = run_step(self.settings, read)
        per_min, labelers = pace(times)
        return queue_size(self.cfg.retrain_every, per_min, retrain_s, labelers)

    def due(self) -> bool:
        """K new answers since the newest generation, or the queue ran dry with new answers in."""
        from curator.store import live as store_live
        from curator.store.queries import agreed_labels

        def read(s):
            g = store_live.latest_generation(s, self.project_id)
            return len(agreed_labels(s, self.ds)), g.n_labels if g else 0, len(store_live.queue(s, self.ds))

        n, last, queued = run_step(self.settings, read)
        return n - last >= self.cfg.retrain_every or (queued == 0 and n > last)

    def refresh(self):
        """Retrain, top the queue up, re-rank it, record the generation, push, write the order."""
        from curator import rounds
        from curator.store import live as store_live

        started = time.perf_counter()
        clock = _Clock()
        number = run_step(self.settings, lambda s: (lambda g: 0 if g is None else g.number + 1)(
            store_live.latest_generation(s, self.project_id)))
        ids, labels = self._labels()
        if len(set(labels)) < 2:  # one class cannot train a classifier: keep the queue as it is
            return None
        model = self._train(ids, labels)
        clock.lap("train")
        size = self._target_size()
        _kill_point("select", number)
        queued = run_step(self.settings, lambda s: store_live.queue(s, self.ds))
        need = size - len(queued)
        round_number = None
        if need > 0:
            sub = candidates(need, self.cfg.subsample)
            scored = rounds.score_pool(self.settings, self.cfg.dataset, model, split=self.cfg.pool_split,
                                       subsample=sub, seed=self.cfg.seed,
                                       mc_samples=live_mc_samples(model, self.cfg.policy))
            if len(scored.sample_ids):
                got = rounds.select_round(self.settings, self.cfg.dataset, model, budget=min(need, len(scored.sample_ids)),
                                          policy=self.cfg.policy, seed=self.cfg.seed, split=self.cfg.pool_split,
                                          subsample=sub, at_most=True, scored=scored)
                round_number = got.number
        clock.lap("select")
        _kill_point("record", number)
        gen = self._record(model, round_number, started, size, labels=len(ids))
        clock.lap("rank")
        _kill_point("push", number)
        if round_number is not None:
            self._push_open(only=round_number)
        clock.lap("push")
        _kill_point("rank", number)
        self._follow(model)
        clock.lap("follow")
        if self._order_thread is None:
            self._order_thread = threading.Thread(target=self._order_worker, name="curator-live-order", daemon=True)
            self._order_thread.start()
        self._order_due.set()
        self.generations += 1
        self.phases, self.phases_cpu = clock.wall, clock.cpu
        self.log(f"live: generation {gen.number}: {gen.n_labels} labels, queue {size}, model {gen.model_id}, "
                 + ", ".join(f"{k} {v:.1f} s" for k, v in clock.wall.items()))
        return gen

    def _record(self, model, round_number, started: float, size: int, labels: int = 0):
        """Rank the queue by ``model`` (read -> compute -> write) and record the generation; rounds whose
        samples are all answered are closed in the same transaction."""
        from curator.store import live as store_live
        from curator.store import rounds as store_rounds
        from curator.store import samples as store_samples

        def read(s):
            queued = store_live.queue(s, self.ds)
            ids = [q.sample_id for q in queued]
            return ids, (store_samples.uris(s, ids) if model is not None and ids else None), \
                store_live.open_live_rounds(s, self.ds)

        def compute(got):
            ids, uris, open_rounds = got
            probs = None
            if uris:
                from curator.rounds import predict_probs

                probs = predict_probs(model.adapter, uris)
            return rank_queue(ids, probs), open_rounds

        def write(s, result):
            ranks, open_rounds = result
            still = {q.round_number for q in store_live.queue(s, self.ds)}
            for n in open_rounds:
                if n not in still and (round_number is None or n != round_number):
                    store_rounds.set_status(s, self.ds, n, "labeled", only_from=("pushed",))
            return store_live.add_generation(s, self.project_id, model_id=None if model is None else model.model_id,
                                             n_labels=labels, round_number=round_number, queue_size=size,
                                             seconds=time.perf_counter() - started, ranks=ranks)

        return run_step(self.settings, read, compute, write)

    # -- the loop -----------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> int:
        """Serve and retrain until ``stop`` is set or ``until_labels`` labels are in and ranked;
        returns the generations this process made."""
        stop = stop or threading.Event()
        if self.backend is None:
            self.open()
        last_pull = time.monotonic()
        try:
            while not stop.is_set():
                if self.due():
                    self.refresh()
                elif self.cfg.until_labels is not None and len(self._labels()[0]) >= self.cfg.until_labels:
                    break
                if time.monotonic() - last_pull > PULL_EVERY_S:
                    try:
                        self._pull()
                    except CuratorError as exc:  # the server away for a moment: the next pull catches up
                        self.log(f"live: reconciliation pull failed ({exc}); trying again in {PULL_EVERY_S:g} s")
                    last_pull = time.monotonic()
                stop.wait(self.cfg.poll_s)
        finally:
            self.close()
        return self.generations

    def close(self) -> None:
        self._flush_order()
        if self.backend is not None:
            self.backend.shutdown()
            self.backend.server_close()
            self.backend = None
