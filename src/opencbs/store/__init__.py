"""The database: schema, migrations and queries, on SQLite (default) or PostgreSQL."""
