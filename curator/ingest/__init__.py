"""Ingest sources: image folders, IDX files, NumPy arrays (FiftyOne: see integrations)."""

from curator.ingest._common import IngestReport
from curator.ingest.arrays import ingest_arrays
from curator.ingest.folder import ingest_folder
from curator.ingest.idx import ingest_idx

__all__ = ["IngestReport", "ingest_arrays", "ingest_folder", "ingest_idx"]
