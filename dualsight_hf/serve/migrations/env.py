"""Alembic environment of the prediction history: runs on the connection that `History.upgrade` passes in."""

from alembic import context

from dualsight_hf.serve.history import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the history migrations through dualsight_hf.serve.history.History.upgrade")
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
