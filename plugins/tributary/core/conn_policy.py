"""Which Connections a DAG run may use: a REST caller picks a Connection only from the DAG's allow-list.

A param made by :func:`tributary.core.params.conn_id_param` (or a nested property made by
:func:`tributary.core.params.conn_id_schema`) chooses a Connection. Without a policy, anyone allowed to
trigger a DAG (an ``op`` user, a REST client) could point it at another team's signing key by
passing that key's ``conn_id``. A run may use:

* the DAG's default Connection (the param's default), always;
* the Connections listed for the DAG in the Airflow Variable ``tributary_allowed_connections``
  (JSON ``{"<dag_id>": ["<conn_id>", ...]}``);
* a Connection whose extra lists the DAG: ``{"allowed_dags": ["<dag_id>", ...]}``.

:func:`check_run_connections` is every Tributary task's ``pre_execute`` (``core.defaults.default_args``):
it runs before the task's ``execute``, so the first task refuses before any side effect. A refusal
is a :class:`~tributary.core.errors.SecurityError`, failed without retry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from tributary.core.errors import DataError, SecurityError
from tributary.core.params import CONNECTION_MARKER

ALLOWED_CONNECTIONS_VARIABLE = "tributary_allowed_connections"
SYSTEM = "platform"


def _variable_allow_list(dag_id: str) -> set[str]:
    from airflow.sdk import Variable

    raw = Variable.get(ALLOWED_CONNECTIONS_VARIABLE, default=None)
    if raw in (None, ""):
        return set()
    try:
        policy = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise SecurityError(f"Variable {ALLOWED_CONNECTIONS_VARIABLE} is not JSON ({exc}): refusing every"
                            " non-default Connection", system=SYSTEM, reason="conn_policy:variable") from None
    if not isinstance(policy, Mapping) or not all(
            isinstance(v, list) and all(isinstance(c, str) for c in v) for v in policy.values()):
        # A malformed policy allows nothing beyond the defaults rather than guessing what was meant.
        raise SecurityError(f"Variable {ALLOWED_CONNECTIONS_VARIABLE} must be {{dag_id: [conn_id, ...]}}",
                            system=SYSTEM, reason="conn_policy:variable")
    return set(policy.get(dag_id, ()))


def _connection_allows(conn_id: str, dag_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:  # a Connection that does not exist allows nothing
        return False
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    allowed = extra.get("allowed_dags") if isinstance(extra, Mapping) else None
    return isinstance(allowed, list) and dag_id in allowed


def allowed_conn_id(dag_id: str, conn_id: str, *, default: str | None) -> str:
    """``conn_id`` when DAG ``dag_id`` may use it (see the module doc), else :class:`SecurityError`."""
    if conn_id == default:
        return conn_id
    if conn_id in _variable_allow_list(dag_id) or _connection_allows(conn_id, dag_id):
        return conn_id
    raise SecurityError(
        f"DAG {dag_id!r} may not use Connection {conn_id!r}: it is not the DAG's default ({default!r}), not"
        f" listed for the DAG in Variable {ALLOWED_CONNECTIONS_VARIABLE} and its extra has no allowed_dags"
        " naming the DAG", system=SYSTEM, reason="conn_policy:refused")


def connection_selectors(schema: Mapping[str, Any], default: Any,
                         path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str | None]]:
    """(path, default conn id) of every Connection-choosing value under a param's JSON schema."""
    if schema.get(CONNECTION_MARKER):
        yield path, default if isinstance(default, str) else schema.get("default")
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, Mapping):
            sub_default = default.get(name) if isinstance(default, Mapping) else None
            yield from connection_selectors(sub, sub_default if sub_default is not None else sub.get("default"),
                                            (*path, name))


def _value_at(params: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = params
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def check_params(dag_id: str, dag_params: Any, values: Mapping[str, Any]) -> None:
    """Check every Connection the run's param ``values`` choose against the DAG's ``dag_params``."""
    for name in dag_params:
        param = dag_params.get_param(name) if hasattr(dag_params, "get_param") else None
        if param is None:
            continue
        for path, default in connection_selectors(param.schema, param.value, (name,)):
            chosen = _value_at(values, path)
            if chosen is None:
                continue  # absent: the code falls back to the default
            if not isinstance(chosen, str):
                raise SecurityError(f"{'.'.join(path)} must name a Connection", system=SYSTEM,
                                    reason="conn_policy:refused")
            allowed_conn_id(dag_id, chosen, default=default)


def check_finite(value: Any, path: str = "params") -> None:
    """:class:`DataError` for a NaN or an infinity anywhere in ``value``. The REST API parses ``conf``
    with Python's ``json`` (which reads ``NaN`` and ``Infinity``) and JSON schema lets NaN through every
    ``minimum``/``maximum`` (each comparison with NaN is false), so a schema alone cannot refuse it."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{path} is {value!r}: numbers must be finite", system=SYSTEM, reason="params:non_finite")
    if isinstance(value, Mapping):
        for key, item in value.items():
            check_finite(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_finite(item, f"{path}[{index}]")


def check_run_connections(context: Mapping[str, Any]) -> None:
    """A task's ``pre_execute``: refuse the run when a param chooses a Connection the DAG may not use,
    or carries a non-finite number, before the task does anything."""
    from tributary.core.failfast import raise_classified

    dag = context.get("dag")
    if dag is None:
        return
    params = context.get("params") or {}
    try:
        check_finite(dict(params))
        check_params(dag.dag_id, dag.params, params)
    except (SecurityError, DataError) as exc:
        raise_classified(exc, SYSTEM)
