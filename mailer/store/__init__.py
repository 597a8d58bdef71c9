"""The database: engines (SQLite or PostgreSQL), the tables declared once in ``models``, and
the Alembic migrations. It writes no rows itself; each table's owner lives in its domain
package (see the README's map).
"""
