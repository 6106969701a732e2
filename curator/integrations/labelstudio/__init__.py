"""Label Studio bridge: a local server, push a round as tasks, pull annotations back.

    server.py       install into ``.venv-ls`` and start/stop/status a local, offline server
    client.py       the SDK behind one class whose errors name the server, never the token
    labelconfig.py  generate or validate the labeling configuration against the data
    push.py         a round -> tasks, exactly once per (project, sample)
    pull.py         annotations -> the Annotation table (new, updated, deleted, skipped)
    oracle.py       a labeler stand-in answering with the ground truth through the API

Submodules import ``label_studio_sdk`` lazily: ``import curator.integrations.labelstudio``
costs nothing.
"""

TOOL = "labelstudio"
