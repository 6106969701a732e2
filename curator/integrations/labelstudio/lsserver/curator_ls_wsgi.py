"""Label Studio's WSGI application, set up for several server processes on one SQLite file.

Label Studio opens SQLite with Python's defaults (rollback journal, 5 s busy timeout),
made for one ``runserver`` process. With several processes: WAL lets readers go on
while one process writes; ``IMMEDIATE`` takes the write lock when a transaction begins
(a deferred one that reads, then writes, fails at once with "database is locked" when
another process committed meanwhile: the busy timeout does not cover that case); 60 s
of busy timeout lets a writer wait for another's import instead of failing. Label
Studio's retry middleware (``DatabaseIsLockedRetryMiddleware``) stays the last resort.
The settings are changed in place before Django opens any connection: Label Studio's
settings module reads ``django.conf.settings`` while it loads, so it cannot be wrapped.
"""

import os

os.environ["DJANGO_SETTINGS_MODULE"] = "core.settings.label_studio"

from django.conf import settings  # noqa: E402

if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    settings.DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=60, transaction_mode="IMMEDIATE", init_command="PRAGMA journal_mode=WAL"
    )
# the port Label Studio tells ML backends it listens on (``label-studio start`` sets it at run time)
settings.INTERNAL_PORT = os.environ.get("CURATOR_LS_INTERNAL_PORT", settings.INTERNAL_PORT)

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()


def _lean_listing_prefetch() -> bool:
    """One change to what Label Studio 1.23.2 does, for API listings that name their fields.

    Its Data Manager task list (``TaskListAPI.prefetch``) prefetches ten relations for every
    page: annotations, their users, the project, predictions, five storage-link tables and the
    file upload, each a query with every task id of the page. A request whose ``include`` names
    neither ``data`` (with ``resolve_uri=false``), ``predictions``, ``storage_filename`` nor
    ``file_upload`` serialises none of the last seven; their prefetch is a third of such a
    listing's CPU (5,000 annotated tasks: 2.06 -> 1.36 CPU s median, the same bytes; profiled
    2026-12-01). Such requests (curator's pull and its listings by id) skip them; every other
    request (the UI's: no ``include``; a listing with ``data``, whose media URLs are resolved
    through the storage links: 4 times the CPU without their prefetch) is unchanged.
    Applied only to the version it was measured on; False when not applied.
    """
    import label_studio
    from data_manager.api import TaskListAPI

    if label_studio.__version__ != "1.23.2" or not isinstance(TaskListAPI.__dict__.get("prefetch"), staticmethod):
        return False
    from core.current_request import get_current_request

    full = TaskListAPI.prefetch
    extra = {"predictions": ("predictions",),
             "storage_filename": tuple(f"io_storages_{k}importstoragelink" for k in ("azureblob", "gcs", "localfiles",
                                                                                     "redis", "s3")),
             "file_upload": ("file_upload",)}

    def prefetch(queryset):
        request = get_current_request()
        include = request.GET.get("include") if request is not None else None
        if not include or "data" in include.split(",") or request.GET.get("resolve_uri") not in ("false", "0"):
            return full(queryset)  # resolving the media URLs of ``data`` reads the storage links
        named = set(include.split(","))
        skipped = {rel for field, rels in extra.items() if field not in named for rel in rels}
        keep = [rel for rel in ("annotations", "predictions", "annotations__completed_by", "project", *extra["storage_filename"],
                                "file_upload") if rel not in skipped]
        return queryset.prefetch_related(*keep)

    TaskListAPI.prefetch = staticmethod(prefetch)
    return True


LEAN_PREFETCH = _lean_listing_prefetch()
