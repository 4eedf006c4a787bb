"""Alembic migrations of the Lusifer database schema (see ``lusifer.store.migrate``)."""
