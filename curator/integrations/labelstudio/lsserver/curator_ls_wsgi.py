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
