from tests.did._fixtures import airflow_db, did_config, did_conn, did_devnet, pg3, project_dags  # noqa: F401
