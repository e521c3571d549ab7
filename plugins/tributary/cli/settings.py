"""Load ``airflow_settings.yaml`` (Astro CLI format) into Airflow: connections, variables, pools.

    python -m tributary.cli.settings load airflow_settings.yaml

Strings may reference the environment as ``${NAME}`` or ``${NAME:-default}``, so one file serves
the local run command and production. Loading is an upsert: running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class SettingsError(ValueError):
    pass


def expand(value: Any) -> Any:
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name, default = match.group("name"), match.group("default")
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise SettingsError(f"environment variable {name} is referenced but not set")

        return _ENV_REF.sub(replace, value)
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    return value


def parse(path: Path) -> dict[str, list[dict[str, Any]]]:
    doc = yaml.safe_load(path.read_text()) or {}
    section = doc.get("airflow") or {}
    if not isinstance(section, dict):
        raise SettingsError(f"{path}: top-level 'airflow' must be a mapping")
    parsed: dict[str, list[dict[str, Any]]] = {}
    for key, required in (("connections", ("conn_id", "conn_type")), ("variables", ("variable_name",)),
                          ("pools", ("pool_name", "pool_slot"))):
        items = section.get(key) or []
        if not isinstance(items, list):
            raise SettingsError(f"{path}: airflow.{key} must be a list")
        for index, item in enumerate(items):
            missing = [f for f in required if item.get(f) in (None, "")]
            if missing:
                raise SettingsError(f"{path}: airflow.{key}[{index}] lacks {', '.join(missing)}")
        parsed[key] = [expand(item) for item in items]
    return parsed


def _port(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


def load(path: Path) -> dict[str, int]:
    from airflow.models import Connection, Pool, Variable
    from airflow.utils.session import create_session

    settings = parse(path)
    with create_session() as session:
        for item in settings["connections"]:
            extra = item.get("conn_extra")
            fields = {
                "conn_type": item["conn_type"],
                "host": item.get("conn_host") or None,
                "schema": item.get("conn_schema") or None,
                "login": item.get("conn_login") or None,
                "password": item.get("conn_password") or None,
                "port": _port(item.get("conn_port")),
                "extra": json.dumps(extra) if isinstance(extra, dict) else (extra or None),
                "description": item.get("conn_description") or None,
            }
            existing = session.query(Connection).filter(Connection.conn_id == item["conn_id"]).one_or_none()
            if existing is None:
                session.add(Connection(conn_id=item["conn_id"], **fields))
            else:
                for name, value in fields.items():
                    setattr(existing, name, value)
        for item in settings["pools"]:
            existing = session.query(Pool).filter(Pool.pool == item["pool_name"]).one_or_none()
            if existing is None:
                session.add(Pool(pool=item["pool_name"], slots=int(item["pool_slot"]),
                                 description=item.get("pool_description", ""), include_deferred=False))
            else:
                existing.slots = int(item["pool_slot"])
                existing.description = item.get("pool_description", "")
    for item in settings["variables"]:
        value = item.get("variable_value")
        Variable.set(item["variable_name"], value if isinstance(value, str) else json.dumps(value),
                     description=item.get("variable_description"))
    return {key: len(items) for key, items in settings.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tributary.cli.settings", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("load", "check"):
        command = sub.add_parser(name)
        command.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        counts = load(args.path) if args.command == "load" else {k: len(v) for k, v in parse(args.path).items()}
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(", ".join(f"{n} {k}" for k, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
