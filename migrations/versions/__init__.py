"""The revisions (Alembic skips ``__init__`` when it loads them)."""
