"""Alembic migrations of the auth DB, installed as ``vmdkops_admin.migrations``
and run from code (``vmdkops_admin.db.migrate``); no alembic.ini is needed."""
