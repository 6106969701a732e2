"""Start Label Studio as ``label-studio start`` does, then serve it with gunicorn workers.

Run by Label Studio's interpreter: ``python launch.py HOST PORT WORKERS THREADS``. Label
Studio's ``main`` applies its migrations and creates the known user, then calls
``_app_run(host, port)``; that call is replaced here by an ``exec`` of gunicorn in the same
process (same pid, same session: the pid file and ``stop`` still hold). When gunicorn is not
installed, Label Studio's own ``runserver`` (one process) runs instead, with a log line that
says so.
"""

import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _gunicorn_argv(host, port, workers, threads):
    import label_studio

    ls_path = os.path.dirname(label_studio.__file__)
    return [
        "gunicorn", "curator_ls_wsgi:application",
        "--bind", f"{host}:{port}",
        "--pythonpath", f"{HERE},{ls_path}",
        "--workers", str(workers),
        # threads: a request waiting on I/O (a webhook posted inside an annotation request, an ML
        # backend's predict) must not hold a whole worker; CPU work still runs one per process
        "--worker-class", "gthread", "--threads", str(threads),
        # Label Studio's own deploy (deploy/uwsgi.ini): long requests allowed (an export of
        # 10,000 tasks on a loaded machine), long URLs (Data Manager filters) and headers
        "--timeout", "360", "--graceful-timeout", "10", "--keep-alive", "30",
        "--limit-request-line", "0", "--limit-request-field_size", "0",
        "--access-logfile", "-" if os.environ.get("CURATOR_LS_ACCESS_LOG") else "/dev/null",
        "--error-logfile", "-",
    ]


def main():
    host, port, workers, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    import label_studio.server as ls_server

    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable))

    def app_run(host, port):
        if gunicorn is None:
            print("curator: gunicorn is not installed in Label Studio's environment; serving with "
                  "Django runserver (ONE process): run `make setup-labelstudio` or "
                  f"{os.path.dirname(sys.executable)}/pip install gunicorn", flush=True)
            return original(host, port)
        from django.db import connections

        connections.close_all()
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="core.settings.label_studio",
                   CURATOR_LS_INTERNAL_PORT=str(port))
        print(f"curator: serving Label Studio with gunicorn, {workers} worker processes x {threads} "
              f"threads, on {host}:{port}", flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(gunicorn, _gunicorn_argv(host, port, workers, threads), env)

    original = ls_server._app_run
    ls_server._app_run = app_run
    sys.argv = ["label-studio", "start", "--no-browser", "--internal-host", host, "--port", str(port)]
    ls_server.main()


if __name__ == "__main__":
    main()
