"""Checks for docker-compose.yaml, the production topology.

Three layers:

1. Topology: the file is parsed with PyYAML and the services, shared settings,
   healthchecks, mounts and start-up order are asserted directly.
2. Compose specification: the file is validated offline with the ``compose-spec``
   package. Compose interpolates ``${VAR:-default}`` before validating, and so do
   these tests (``interpolate`` below, with an empty environment, so every default
   is used). Broken copies of the file must be rejected by the same check.
3. If a Docker Compose CLI is installed, ``config -q`` must accept the file.
"""

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import compose_spec
import pytest
import yaml

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"

COMMON_ANCHOR = "x-airflow-common"
AIRFLOW_IMAGE = "${AIRFLOW_IMAGE_NAME:-tributary-airflow:3.3.2}"

INIT_SERVICE = "airflow-init"
LONG_RUNNING_AIRFLOW = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
AIRFLOW_SERVICES = (INIT_SERVICE, *LONG_RUNNING_AIRFLOW)
EXPECTED_SERVICES = {"postgres", "redis", "warehouse-init", "mlflow", "bitcoin-devnet", *AIRFLOW_SERVICES}

PROJECT_MOUNTS = {
    "/opt/airflow/dags": "./dags",
    "/opt/airflow/plugins": "./plugins",
    "/opt/airflow/include": "./include",
}

# Environment every Airflow container must get, after interpolation with defaults.
EXPECTED_AIRFLOW_ENV = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:airflow@postgres/airflow",
    "AIRFLOW__CELERY__RESULT_BACKEND": "db+postgresql://airflow:airflow@postgres/airflow",
    "AIRFLOW__CELERY__BROKER_URL": "redis://:@redis:6379/0",
    "AIRFLOW__CORE__FERNET_KEY": "",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://airflow-apiserver:8080/execution/",
    "AIRFLOW__API_AUTH__JWT_SECRET": "change-me",
    "AIRFLOW__CORE__AUTH_MANAGER": (
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    ),
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,ops:op,viewer:viewer",
    "AIRFLOW__CORE__DAGS_FOLDER": "/opt/airflow/dags",
    "AIRFLOW__CORE__PLUGINS_FOLDER": "/opt/airflow/plugins",
    "PYTHONPATH": "/opt/airflow/plugins",
    "TRIBUTARY_REPORTS_DIR": "/opt/airflow/reports",
    "_PIP_ADDITIONAL_REQUIREMENTS": "",
}
EXPECTED_WAREHOUSE_CONN = {
    "conn_type": "postgres",
    "host": "postgres",
    "port": 5432,
    "login": "airflow",
    "password": "airflow",
    "schema": "tributary",
}


# --------------------------------------------------------------------------- helpers

# ``$$`` (literal dollar), ``$NAME``, ``${NAME}`` and ``${NAME<op><arg>}`` with op one of
# ``:-  -  :?  ?  :+  +`` -- the interpolation syntax of the Compose specification.
_INTERPOLATION = re.compile(
    r"\$(?:"
    r"(?P<escaped>\$)"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<invalid>)"
    r")"
)


def _interpolate_str(value: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match["escaped"] is not None:
            return "$"
        if match["invalid"] is not None:
            raise ValueError(f"invalid interpolation format at offset {match.start()} in {value!r}")
        name = match["named"] or match["braced"]
        op, arg = match["op"], match["arg"]
        if arg is not None and "$" in arg:
            raise ValueError(f"nested interpolation is not supported by this checker: {value!r}")
        current = env.get(name)
        if op is None:
            return current or ""
        is_unset = current is None if op[0] != ":" else not current
        kind = op[-1]
        if kind == "-":
            return arg if is_unset else current
        if kind == "?":
            if is_unset:
                raise ValueError(f"required variable {name} is missing: {arg}")
            return current
        return "" if is_unset else arg  # "+": alternative value when set

    return _INTERPOLATION.sub(substitute, value)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Resolve Compose variable interpolation in every string value (keys are left as-is)."""
    if isinstance(node, str):
        return _interpolate_str(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


def validate_with_compose_spec(document: Mapping[str, Any]) -> compose_spec.ComposeSpecification:
    """Validate an already-interpolated compose document against the Compose specification.

    ``PyCompose.from_json`` deserialises with the strict native (Rust) model: unknown keys
    (anything not prefixed ``x-``), wrong types, bad port/duration syntax and unknown enum
    values raise ``ValueError``. ``validate()`` adds cross-reference checks (e.g. networks
    used by services must be declared) and ``to_spec()`` re-checks the result with the
    Pydantic models generated from the specification's JSON schema.
    """
    parsed = compose_spec.PyCompose.from_json(json.dumps(document))
    parsed.validate()
    return parsed.to_spec()


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Return ``{dependency: condition}``, accepting the short (list) and long (map) forms."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _mounts(service: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Return ``{container_path: (source, mode)}`` for short-syntax volume entries."""
    result = {}
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"expected short volume syntax, got {entry!r}"
        source, target, *mode = entry.split(":")
        result[target] = (source, mode[0] if mode else "rw")
    return result


def _command_text(service: Mapping[str, Any]) -> str:
    return " ".join(_as_list(service.get("command")))


def _healthcheck_text(service: Mapping[str, Any]) -> str:
    return " ".join(_as_list(service["healthcheck"]["test"]))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def raw(compose_text: str) -> dict[str, Any]:
    """The file as written: YAML anchors and ``<<`` merges resolved, variables not."""
    document = yaml.safe_load(compose_text)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def resolved(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as Compose sees it when no variable is set: every default applied."""
    return interpolate(raw, env={})


@pytest.fixture(scope="module")
def resolved_text(compose_text: str) -> str:
    """The file's text with defaults substituted, for compose-spec's own YAML reader.

    Text-level substitution is safe here because no default contains YAML-significant
    characters; comment lines are dropped because Compose does not interpolate comments.
    """
    lines = [line for line in compose_text.splitlines() if not line.lstrip().startswith("#")]
    return _interpolate_str("\n".join(lines) + "\n", {})


@pytest.fixture(scope="module")
def services(resolved: dict[str, Any]) -> dict[str, Any]:
    return resolved["services"]


# --------------------------------------------------------------------------- 1. topology


def test_file_starts_with_explanatory_comment(compose_text: str) -> None:
    header = compose_text.split("\n\n", 1)[0]
    assert header.startswith("#")
    assert "production topology" in header
    assert "docker compose up" in compose_text.split("x-airflow-common:", 1)[0]


def test_no_obsolete_version_key(raw: dict[str, Any]) -> None:
    assert "version" not in raw


def test_expected_services_exist(services: dict[str, Any]) -> None:
    assert set(services) == EXPECTED_SERVICES


def test_backing_service_images(services: dict[str, Any]) -> None:
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"


def test_every_airflow_service_merges_the_same_common_anchor(compose_text: str) -> None:
    """Each Airflow service must be built from the one ``x-airflow-common`` node via ``<<``."""
    root = yaml.compose(compose_text)
    top = {key.value: value for key, value in root.value}
    common_node = top[COMMON_ANCHOR]
    assert re.search(rf"^{COMMON_ANCHOR}: &\S+$", compose_text, re.MULTILINE), "must be a YAML anchor"
    service_nodes = {key.value: value for key, value in top["services"].value}
    for name in AIRFLOW_SERVICES:
        merged = [value for key, value in service_nodes[name].value if key.value == "<<"]
        assert merged, f"{name} does not merge {COMMON_ANCHOR}"
        assert merged[0] is common_node, f"{name} merges something other than {COMMON_ANCHOR}"


def test_every_airflow_service_uses_the_same_image(raw: dict[str, Any], resolved: dict[str, Any]) -> None:
    assert raw[COMMON_ANCHOR]["image"] == AIRFLOW_IMAGE
    assert raw[COMMON_ANCHOR]["build"] == "."  # the image is ./Dockerfile: Airflow + the tributary provider
    dockerfile = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()
    assert "FROM apache/airflow:3.3.2-python3.11" in dockerfile
    assert "requirements.txt" in dockerfile
    for name in AIRFLOW_SERVICES:
        assert raw["services"][name]["image"] == AIRFLOW_IMAGE, name
        assert resolved["services"][name]["image"] == "tributary-airflow:3.3.2", name


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_environment(services: dict[str, Any], name: str) -> None:
    env = services[name]["environment"]
    assert isinstance(env, dict), "environment must use the mapping form"
    for key, expected in EXPECTED_AIRFLOW_ENV.items():
        assert env.get(key) == expected, f"{name}: {key}"
    assert json.loads(env["AIRFLOW_CONN_TRIBUTARY_WAREHOUSE"]) == EXPECTED_WAREHOUSE_CONN


def test_worker_runs_celery(services: dict[str, Any]) -> None:
    assert _command_text(services["airflow-worker"]) == "celery worker"
    assert services["airflow-worker"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("airflow-apiserver", "api-server"),
        ("airflow-scheduler", "scheduler"),
        ("airflow-dag-processor", "dag-processor"),
        ("airflow-triggerer", "triggerer"),
        ("airflow-worker", "celery worker"),
    ],
)
def test_long_running_commands(services: dict[str, Any], name: str, command: str) -> None:
    assert _command_text(services[name]) == command


def test_metadata_db_and_broker_point_at_their_services(services: dict[str, Any]) -> None:
    postgres_env = services["postgres"]["environment"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
            url = urlsplit(env[key])
            assert url.hostname == "postgres", f"{name}: {key}"
            assert url.path == "/" + postgres_env["POSTGRES_DB"], f"{name}: {key}"
            assert url.username == postgres_env["POSTGRES_USER"], f"{name}: {key}"
            assert url.password == postgres_env["POSTGRES_PASSWORD"], f"{name}: {key}"
        assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis", name
        assert urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]).hostname == "airflow-apiserver"


def test_database_credentials_are_overridden_consistently(raw: dict[str, Any]) -> None:
    env = {"TRIBUTARY_PG_USER": "tribu", "TRIBUTARY_PG_PASSWORD": "s3cret"}
    services = interpolate(raw, env)["services"]
    assert services["postgres"]["environment"]["POSTGRES_USER"] == "tribu"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    assert services["warehouse-init"]["environment"]["PGPASSWORD"] == "s3cret"
    for name in AIRFLOW_SERVICES:
        airflow_env = services[name]["environment"]
        metadata_url = urlsplit(airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert (metadata_url.username, metadata_url.password) == ("tribu", "s3cret"), name
        warehouse = json.loads(airflow_env["AIRFLOW_CONN_TRIBUTARY_WAREHOUSE"])
        assert (warehouse["login"], warehouse["password"]) == ("tribu", "s3cret"), name


def test_secrets_and_image_are_overridable(raw: dict[str, Any]) -> None:
    env = {
        "AIRFLOW_IMAGE_NAME": "registry.example/tributary:1.2.3",
        "AIRFLOW__CORE__FERNET_KEY": "fernet",
        "AIRFLOW__API_AUTH__JWT_SECRET": "jwt",
    }
    services = interpolate(raw, env)["services"]
    for name in AIRFLOW_SERVICES:
        assert services[name]["image"] == "registry.example/tributary:1.2.3"
        assert services[name]["environment"]["AIRFLOW__CORE__FERNET_KEY"] == "fernet"
        assert services[name]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] == "jwt"


def test_warehouse_database_is_created_idempotently(services: dict[str, Any]) -> None:
    service = services["warehouse-init"]
    command = _command_text(service)
    assert "CREATE DATABASE tributary" in command
    assert "CREATE DATABASE mlflow" in command
    assert "pg_database" in command, "must check for an existing database first"
    assert service["environment"]["PGHOST"] == "postgres"
    assert _depends_on(service) == {"postgres": "service_healthy"}


def test_init_migrates_then_loads_settings(services: dict[str, Any]) -> None:
    command = _command_text(services[INIT_SERVICE])
    migrate = command.index("airflow db migrate")
    load = command.index("python -m tributary.cli.settings load /opt/airflow/airflow_settings.yaml")
    assert migrate < load
    assert "healthcheck" not in services[INIT_SERVICE]
    assert services[INIT_SERVICE].get("restart", "no") == "no"


@pytest.mark.parametrize("name", ["postgres", "redis", *LONG_RUNNING_AIRFLOW])
def test_long_running_services_have_healthchecks(services: dict[str, Any], name: str) -> None:
    healthcheck = services[name].get("healthcheck")
    assert healthcheck, f"{name} has no healthcheck"
    assert not healthcheck.get("disable", False)
    assert _as_list(healthcheck["test"])[0] in {"CMD", "CMD-SHELL"}
    assert services[name].get("restart") == "always"


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("postgres", ["pg_isready"]),
        ("redis", ["redis-cli", "ping"]),
        ("airflow-apiserver", ["http://localhost:8080/api/v2/monitor/health"]),
        ("airflow-scheduler", ['airflow jobs check --job-type SchedulerJob --hostname "${HOSTNAME}"']),
        ("airflow-dag-processor", ['airflow jobs check --job-type DagProcessorJob --hostname "${HOSTNAME}"']),
        ("airflow-triggerer", ['airflow jobs check --job-type TriggererJob --hostname "${HOSTNAME}"']),
        (
            "airflow-worker",
            [
                "celery --app airflow.providers.celery.executors.celery_executor.app inspect ping",
                '-d "celery@${HOSTNAME}"',
            ],
        ),
    ],
)
def test_healthcheck_commands(services: dict[str, Any], name: str, fragments: list[str]) -> None:
    # ``$${HOSTNAME}`` in the file is Compose's escape: the container's shell expands it.
    text = _healthcheck_text(services[name])
    for fragment in fragments:
        assert fragment in text, f"{name}: {fragment!r} not in {text!r}"


def test_apiserver_publishes_port_8080(services: dict[str, Any]) -> None:
    assert services["airflow-apiserver"]["ports"] == ["8080:8080"]


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_project_folders_and_settings_are_mounted(services: dict[str, Any], name: str) -> None:
    mounts = _mounts(services[name])
    for target, source in PROJECT_MOUNTS.items():
        assert mounts.get(target, (None,))[0] == source, f"{name}: {target}"
    assert mounts["/opt/airflow/airflow_settings.yaml"] == ("./airflow_settings.yaml", "ro")
    # logs and reports live in named volumes shared by every Airflow container
    assert not mounts["/opt/airflow/logs"][0].startswith(("./", "/"))
    assert not mounts["/opt/airflow/reports"][0].startswith(("./", "/"))
    assert services[name]["environment"]["TRIBUTARY_REPORTS_DIR"] == "/opt/airflow/reports"


@pytest.mark.parametrize("name", LONG_RUNNING_AIRFLOW)
def test_long_running_services_wait_for_init_and_backends(services: dict[str, Any], name: str) -> None:
    assert _depends_on(services[name]) == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        INIT_SERVICE: "service_completed_successfully",
    }


def test_init_waits_for_database_and_warehouse(services: dict[str, Any]) -> None:
    deps = _depends_on(services[INIT_SERVICE])
    assert deps["postgres"] == "service_healthy"
    assert deps["warehouse-init"] == "service_completed_successfully"
    assert INIT_SERVICE not in deps


def test_start_order_is_acyclic_and_init_precedes_all_long_running(services: dict[str, Any]) -> None:
    graph = {name: set(_depends_on(service)) for name, service in services.items()}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(node: str) -> None:
        if node in order:
            return
        assert node not in visiting, f"dependency cycle through {node}"
        visiting.add(node)
        for dependency in sorted(graph[node]):
            visit(dependency)
        visiting.discard(node)
        order.append(node)

    for name in sorted(graph):
        visit(name)
    for name in LONG_RUNNING_AIRFLOW:
        assert order.index(INIT_SERVICE) < order.index(name)
    assert order.index("warehouse-init") < order.index(INIT_SERVICE)


def test_references_resolve(resolved: dict[str, Any]) -> None:
    """Cross-references that compose-spec's ``validate()`` does not cover."""
    services = resolved["services"]
    declared_volumes = set(resolved.get("volumes") or {})
    for name, service in services.items():
        for dependency in _depends_on(service):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for source, _mode in _mounts(service).values():
            if not source.startswith(("./", "../", "/", "~")):
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"


def test_no_unresolved_variables_remain(resolved: dict[str, Any]) -> None:
    # After interpolation the only "$" left are the escaped "$${HOSTNAME}" healthchecks.
    leftovers = re.findall(r"\$\{?[A-Za-z_]\w*", json.dumps(resolved))
    assert set(leftovers) <= {"${HOSTNAME"}, leftovers


# --------------------------------------------------------------------------- 2. Compose specification


def test_interpolation_matches_compose_semantics() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate("$$HOME $${X}", env) == "$HOME ${X}"
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "value d d  d"
    assert interpolate("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}|$SET|${UNSET}", env) == "alt||alt|value|"
    assert interpolate("admin:${UNSET:-a:b,c:d}", env) == "admin:a:b,c:d"
    with pytest.raises(ValueError, match="required"):
        interpolate("${UNSET:?must be set}", env)
    with pytest.raises(ValueError, match="invalid interpolation"):
        interpolate("${not valid}", env)


def test_file_conforms_to_compose_specification(resolved: dict[str, Any]) -> None:
    spec = validate_with_compose_spec(resolved)
    assert spec.services is not None
    assert set(spec.services) == EXPECTED_SERVICES
    assert set(spec.volumes or {}) == {
        "postgres-db", "airflow-logs", "tributary-reports", "airflow-auth", "tributary-data", "mlflow-artifacts",
        "bitcoin-devnet"}


def test_file_merge_keys_are_accepted_by_compose_spec(resolved_text: str) -> None:
    """compose-spec's own YAML reader, with ``<<`` merges, agrees with PyYAML's reading."""
    parsed = compose_spec.PyOptions(apply_merge=True).from_yaml(resolved_text)
    parsed.validate()
    assert set(parsed.service_names()) == EXPECTED_SERVICES
    worker = parsed.to_dict()["services"]["airflow-worker"]
    assert worker["image"] == "tributary-airflow:3.3.2"
    assert worker["environment"]["DUMB_INIT_SETSID"] == "0"
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def _set_service_key(service: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        document["services"][service][key] = value

    return mutate


def _rename_services(document: dict[str, Any]) -> None:
    document["servicez"] = document.pop("services")


def _add_top_level(document: dict[str, Any]) -> None:
    document["servicez"] = {"extra": {"image": "busybox"}}


def _undeclared_network(document: dict[str, Any]) -> None:
    document["services"]["redis"]["networks"] = ["backend"]


def _bad_condition(document: dict[str, Any]) -> None:
    document["services"]["airflow-worker"]["depends_on"]["airflow-init"]["condition"] = "service_done"


# name -> (mutation of a copy of the resolved file, pattern the rejection message must match)
BROKEN_COPIES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "ports-not-a-list": (
        _set_service_key("airflow-apiserver", "ports", "not-a-list"),
        r"invalid type: string \"not-a-list\"",
    ),
    "port-not-a-number": (
        _set_service_key("airflow-apiserver", "ports", ["http:8080"]),
        r"error parsing `http` as an integer",
    ),
    "unknown-service-key": (
        _set_service_key("airflow-worker", "imagez", "apache/airflow"),
        r"`imagez` does not start with \"x-\"",
    ),
    "services-renamed-servicez": (_rename_services, r"missing field `services`"),
    "unknown-top-level-servicez": (_add_top_level, r"`servicez` does not start with \"x-\""),
    "bad-restart-policy": (
        _set_service_key("redis", "restart", "sometimes"),
        r"unknown variant `sometimes`",
    ),
    "bad-healthcheck-interval": (
        _set_service_key("postgres", "healthcheck", {"test": "true", "interval": "x"}),
        r"duration `x`",
    ),
    "bad-depends-on-condition": (_bad_condition, r"unknown variant `service_done`"),
    "environment-not-a-map-or-list": (
        _set_service_key("airflow-scheduler", "environment", 42),
        r"invalid type: integer `42`",
    ),
    "undeclared-network": (_undeclared_network, r"network `backend`.* is not defined"),
}


@pytest.mark.parametrize(("mutate", "reason"), BROKEN_COPIES.values(), ids=BROKEN_COPIES.keys())
def test_broken_copies_are_rejected(
    resolved: dict[str, Any], mutate: Callable[[dict[str, Any]], None], reason: str
) -> None:
    broken = copy.deepcopy(resolved)
    mutate(broken)
    assert broken != resolved
    with pytest.raises(ValueError, match=reason):
        validate_with_compose_spec(broken)


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ('    ports:\n      - "8080:8080"\n', '    ports: "not-a-list"\n', r"\"not-a-list\""),
        ("\nservices:\n", "\nservicez:\n", r"missing field `services`"),
        ("\n  redis:\n", "\n  redis:\n    imagez: redis\n", r"`imagez` does not start with \"x-\""),
    ],
    ids=["ports-not-a-list", "servicez", "unknown-service-key"],
)
def test_broken_yaml_text_is_rejected(resolved_text: str, old: str, new: str, reason: str) -> None:
    """The same rejection through compose-spec's YAML entry point, on an edited copy of the file's text."""
    assert resolved_text.count(old) == 1, f"{old!r} not found once in the file"
    with pytest.raises(ValueError, match=reason):
        compose_spec.PyOptions(apply_merge=True).from_yaml(resolved_text.replace(old, new))


# --------------------------------------------------------------------------- 3. Docker Compose CLI


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    return None


def test_docker_compose_config_accepts_file() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip(
            "no Docker Compose CLI: `docker compose version` failed or docker is absent, "
            "and no docker-compose binary is on PATH"
        )
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_mlflow_server_is_the_dags_tracking_server(services: dict[str, Any]) -> None:
    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert "server" in command and "@postgres/mlflow" in command and "--serve-artifacts" in command
    assert _depends_on(mlflow) == {"warehouse-init": "service_completed_successfully"}
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["TRIBUTARY_MLFLOW_URI"] == "http://mlflow:5000", name
        assert env["TRIBUTARY_INCLUDE_DIR"] == "/opt/airflow/include", name
        assert env["TRIBUTARY_DATA_DIR"] == "/opt/airflow/data", name


def test_bitcoin_devnet_service_backs_the_bitcoin_connection(services: dict[str, Any]) -> None:
    devnet = services["bitcoin-devnet"]
    assert devnet["entrypoint"] == ["python", "-m", "devnets.bitcoin"] and devnet["working_dir"] == "/opt/tributary"
    command = " ".join(devnet["command"])
    assert "--rpcport=18443" in command and "--rpcbind=0.0.0.0" in command and "--datadir=/bitcoin" in command
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["TRIBUTARY_BITCOIN_HOST"] == "bitcoin-devnet" and env["TRIBUTARY_BITCOIN_PORT"] == "18443", name
        assert f"--rpcuser={env['TRIBUTARY_BITCOIN_USER']}" in command, name
        assert f"--rpcpassword={env['TRIBUTARY_BITCOIN_PASSWORD']}" in command, name
