"""classify(): one decision per failure, from real exceptions of the libraries we use."""

from __future__ import annotations

import json
import socket

import pytest

from tributary.core.errors import (
    DataError,
    ErrorClass,
    JsonRpcError,
    PermanentError,
    SecurityError,
    Severity,
    TransientError,
    classify,
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TransientError("node busy"), ErrorClass.TRANSIENT),
        (PermanentError("bad address"), ErrorClass.PERMANENT),
        (DataError("bad row", quarantined=3), ErrorClass.DATA),
        (SecurityError("signature mismatch"), ErrorClass.SECURITY),
    ],
)
def test_our_errors_carry_their_class(error: Exception, expected: ErrorClass) -> None:
    assert classify(error).error_class is expected


@pytest.mark.unit
def test_security_errors_are_critical_and_never_retried() -> None:
    result = classify(SecurityError("bad JWS"))
    assert result.severity is Severity.CRITICAL
    assert not result.retryable


@pytest.mark.unit
def test_requests_connection_refused_is_transient() -> None:
    import requests

    with pytest.raises(requests.ConnectionError) as info:
        requests.get(f"http://127.0.0.1:{_closed_port()}/", timeout=2)
    assert classify(info.value).error_class is ErrorClass.TRANSIENT


@pytest.mark.unit
@pytest.mark.parametrize(("status", "expected"), [
    (503, ErrorClass.TRANSIENT), (429, ErrorClass.TRANSIENT), (502, ErrorClass.TRANSIENT),
    (401, ErrorClass.PERMANENT), (404, ErrorClass.PERMANENT), (400, ErrorClass.PERMANENT),
])
def test_requests_http_errors_follow_the_status(http_sink, status: int, expected: ErrorClass) -> None:
    import requests

    http_sink.status = status
    response = requests.post(http_sink.url, json={}, timeout=5)
    with pytest.raises(requests.HTTPError) as info:
        response.raise_for_status()
    result = classify(info.value)
    assert result.error_class is expected
    assert result.reason.startswith(f"http:{status}")


@pytest.mark.unit
def test_httpx_errors_are_classified() -> None:
    import httpx

    with pytest.raises(httpx.ConnectError) as info:
        httpx.get(f"http://127.0.0.1:{_closed_port()}/", timeout=2)
    assert classify(info.value).error_class is ErrorClass.TRANSIENT


@pytest.mark.unit
def test_httpx_status_error_uses_the_status(http_sink) -> None:
    import httpx

    http_sink.status = 500
    response = httpx.post(http_sink.url, json={})
    with pytest.raises(httpx.HTTPStatusError) as info:
        response.raise_for_status()
    assert classify(info.value).error_class is ErrorClass.TRANSIENT


@pytest.mark.unit
def test_malformed_json_answer_is_a_data_error() -> None:
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads("{not json")
    assert classify(info.value).error_class is ErrorClass.DATA


@pytest.mark.postgres
@pytest.mark.parametrize(("sql", "expected", "state"), [
    ("SELECT 1/0", ErrorClass.DATA, "22012"),
    ("SELEC 1", ErrorClass.PERMANENT, "42601"),
    ("SELECT * FROM no_such_table", ErrorClass.PERMANENT, "42P01"),
])
def test_psycopg2_errors_are_classified_by_sqlstate(warehouse, sql: str, expected: ErrorClass,
                                                    state: str) -> None:
    import psycopg2

    conn = psycopg2.connect(warehouse.dsn())
    try:
        with pytest.raises(psycopg2.Error) as info, conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()
    result = classify(info.value)
    assert (result.error_class, result.reason) == (expected, f"sqlstate:{state}")


@pytest.mark.postgres
def test_psycopg2_unique_violation_is_data(warehouse) -> None:
    import psycopg2

    conn = psycopg2.connect(warehouse.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE t (k int PRIMARY KEY); INSERT INTO t VALUES (1)")
            with pytest.raises(psycopg2.IntegrityError) as info:
                cur.execute("INSERT INTO t VALUES (1)")
    finally:
        conn.close()
    assert classify(info.value).error_class is ErrorClass.DATA


@pytest.mark.unit
def test_psycopg2_unreachable_server_is_transient() -> None:
    import psycopg2

    with pytest.raises(psycopg2.OperationalError) as info:
        psycopg2.connect(host="127.0.0.1", port=_closed_port(), user="x", dbname="x", connect_timeout=2)
    assert classify(info.value).error_class is ErrorClass.TRANSIENT


@pytest.mark.postgres
def test_psycopg3_errors_are_classified(warehouse) -> None:
    import psycopg

    with psycopg.connect(warehouse.dsn()) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute("SELECT 1/0")
    assert classify(info.value).error_class is ErrorClass.DATA
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(host="127.0.0.1", port=_closed_port(), user="x", dbname="x", connect_timeout=2)
    assert classify(refused.value).error_class is ErrorClass.TRANSIENT


@pytest.mark.unit
@pytest.mark.parametrize(("code", "expected"), [
    (-32700, ErrorClass.PERMANENT), (-32601, ErrorClass.PERMANENT), (-32602, ErrorClass.PERMANENT),
    (-32603, ErrorClass.TRANSIENT), (-32000, ErrorClass.TRANSIENT), (-5, ErrorClass.PERMANENT),
])
def test_jsonrpc_reserved_codes(code: int, expected: ErrorClass) -> None:
    error = JsonRpcError.from_object({"code": code, "message": "x"}, system="node")
    assert classify(error).error_class is expected


@pytest.mark.unit
def test_jsonrpc_system_codes_take_precedence() -> None:
    # Bitcoin Core: -28 is RPC_IN_WARMUP, a node that will answer shortly.
    error = JsonRpcError.from_object({"code": -28, "message": "Loading block index..."}, system="bitcoin",
                                     code_classes={-28: ErrorClass.TRANSIENT})
    assert classify(error).error_class is ErrorClass.TRANSIENT
    assert error.rpc_message == "Loading block index..."


@pytest.mark.unit
def test_malformed_jsonrpc_error_object_is_data() -> None:
    with pytest.raises(DataError):
        JsonRpcError.from_object({"message": "no code"})


@pytest.mark.unit
def test_web3_exceptions_are_classified() -> None:
    from web3.exceptions import ContractLogicError, TimeExhausted, TransactionNotFound, Web3RPCError

    assert classify(TimeExhausted("no receipt")).error_class is ErrorClass.TRANSIENT
    assert classify(TransactionNotFound("pending")).error_class is ErrorClass.TRANSIENT
    assert classify(ContractLogicError("execution reverted")).error_class is ErrorClass.PERMANENT
    busy = Web3RPCError("server busy", rpc_response={"jsonrpc": "2.0", "id": 1,
                                                     "error": {"code": -32603, "message": "internal"}})
    assert classify(busy).error_class is ErrorClass.TRANSIENT


@pytest.mark.unit
def test_programming_errors_fail_fast_and_unknown_errors_keep_airflow_retries() -> None:
    assert classify(KeyError("x")).error_class is ErrorClass.PERMANENT
    assert classify(TypeError("x")).error_class is ErrorClass.PERMANENT

    class Strange(Exception):
        pass

    result = classify(Strange("?"))
    assert result.error_class is ErrorClass.TRANSIENT
    assert result.reason == "unclassified:Strange"


@pytest.mark.unit
def test_builtin_network_errors_are_transient() -> None:
    assert classify(TimeoutError()).error_class is ErrorClass.TRANSIENT
    assert classify(ConnectionResetError()).error_class is ErrorClass.TRANSIENT
    assert classify(socket.gaierror(-2, "Name or service not known")).error_class is ErrorClass.TRANSIENT


@pytest.mark.unit
def test_a_missing_connection_is_permanent() -> None:
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection("tributary_no_such_connection")
    except Exception as exc:  # AirflowNotFoundException, from whichever module Airflow raises it
        classification = classify(exc)
    else:
        raise AssertionError("the Connection should not exist")
    assert classification.error_class is ErrorClass.PERMANENT and classification.reason == "config:not_found"
