"""The database edge: typed models, engine/session, and queries returning plain data."""

from curator.store.session import get_engine, transaction, upgrade

__all__ = ["get_engine", "transaction", "upgrade"]
