from tests.did._fixtures import did_config, did_conn, did_devnet, pg3  # noqa: F401
