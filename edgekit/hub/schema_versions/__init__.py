"""The hub schema's Alembic revisions (``versions/``) and their environment (``env.py``).

Revision ids are the schema version as four digits (``0006``, ``0007``, ...): the store
reads the version from them, and SQLite files also carry it in ``PRAGMA user_version``.
"""
