"""Persistence: SQLite (default) or PostgreSQL through SQLAlchemy Core; Alembic migrations."""
