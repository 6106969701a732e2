"""Alembic environment: runs on the connection curator hands over, or on a URL.

``curator`` applies migrations itself on first connect (``store.session.upgrade``);
to run them by hand: ``alembic -c db/alembic.ini upgrade head`` with
``CURATOR_DB_URL`` set.
"""

from alembic import context
from sqlalchemy import create_engine

from curator.settings import load_settings
from curator.store.schema import Base

target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(load_settings().database_url)
    with engine.begin() as conn:
        _run(conn)
