"""Files run by Label Studio's own interpreter (``.venv-ls``), never imported by curator.

``launch.py`` does what ``label-studio start`` does (migrations, the known user) and
then replaces itself with gunicorn serving Label Studio's WSGI application in several
worker processes; ``curator_ls_wsgi.py`` is the application the workers load (Label
Studio's own, with SQLite set up for several processes).
"""
