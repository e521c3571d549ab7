"""Storage: the PostgreSQL warehouse (hook, session, migrations) and the quarantine of bad rows."""


# The Connection of the warehouse. Here, not in warehouse.py, so that modules read at DAG parse time
# (core.events) can name it without importing the Postgres provider.
WAREHOUSE_CONN_ID = "tributary_warehouse"
SYSTEM = "warehouse"  # the name in error events of the warehouse itself (migrations, reports over it)
