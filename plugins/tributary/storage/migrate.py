"""Apply the warehouse migrations from outside a task (deploy step, docker-compose ``airflow-init``):

    python -m tributary.storage.migrate [conn_id]

Outside a task the Task SDK cannot see Connections kept in the metadata DB, so this reads the
Connection through Airflow core, which can.
"""

from __future__ import annotations

import sys

from tributary.storage.warehouse import WAREHOUSE_CONN_ID, apply_migrations


def main(argv: list[str] | None = None) -> int:
    import psycopg2
    from airflow.models import Connection

    args = sys.argv[1:] if argv is None else argv
    spec = Connection.get_connection_from_secrets(args[0] if args else WAREHOUSE_CONN_ID)
    conn = psycopg2.connect(host=spec.host, port=spec.port or 5432, user=spec.login,
                            password=spec.password or None, dbname=spec.schema or "postgres")
    try:
        applied = apply_migrations(conn)
    finally:
        conn.close()
    print(f"warehouse migrations applied: {', '.join(applied) if applied else 'none pending'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
