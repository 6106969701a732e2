"""The database edge: the only package that builds queries or touches ORM rows.

``schema`` holds the tables; one module per aggregate (``samples``, ``rounds``,
``models``, ``embeddings``, ``versions``; annotations in ``queries`` for now)
holds functions that take the caller's ``Session`` and return plain data
(frozen dataclasses, tuples, numpy arrays). The caller owns the transaction:
``curator.steps.run_step`` opens one for a step's read and one for its write.
"""

from curator.store.session import get_engine, transaction, upgrade

__all__ = ["get_engine", "transaction", "upgrade"]
