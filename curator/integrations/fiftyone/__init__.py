"""FiftyOne: curator's state in the App, Brain similarity, FiftyOne datasets as pools.

Needs the extra: ``pip install 'curator-loop[fiftyone]'``. fiftyone itself is
imported only inside the functions that use it, with usage tracking off.
"""

from curator.integrations.fiftyone.similarity import compute_visualization, register_similarity
from curator.integrations.fiftyone.source import import_dataset
from curator.integrations.fiftyone.sync import SyncReport, default_name, sync

__all__ = [
    "SyncReport",
    "compute_visualization",
    "default_name",
    "import_dataset",
    "register_similarity",
    "sync",
]
