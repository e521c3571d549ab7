"""Sources: where a pipeline's records come from, read in bounded batches.

Every source yields Arrow record batches of at most ``batch_rows`` rows in the *raw* layout: the
spec's columns as strings (typing happens in validation, so a bad value costs one row, not the
file), plus ``_pos`` (where the record came from, e.g. ``iris.csv:17``; the quarantine key) and
``_error`` (set when the record could not even be parsed, e.g. a CSV row with too many fields).

Kinds (``source.kind`` in the spec):

* ``files``         a glob under the landing folder (CSV, JSON lines or Parquet), streamed file by file
* ``package_file``  a data file shipped inside an installed Python package (no network, no import)
* ``http``          a JSON API, page by page (page number, offset, cursor or next-URL pagination)
* ``sql``           a query against PostgreSQL through a server-side cursor
"""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tributary.core.errors import DataError, PermanentError, SecurityError, TransientError
from tributary.ml import SYSTEM
from tributary.ml.pipeline import lineage
from tributary.ml.pipeline.assets import landing_dir
from tributary.ml.pipeline.staging import rebatch
from tributary.storage import WAREHOUSE_CONN_ID

log = logging.getLogger(__name__)

POS = "_pos"
ERROR = "_error"
_CSV_BLOCK_BYTES = 4 << 20


def raw_schema(columns: Sequence[Mapping[str, str]]) -> pa.Schema:
    return pa.schema([(c["name"], pa.string()) for c in columns] + [(POS, pa.string()), (ERROR, pa.string())])


def as_text(value: Any) -> str | None:
    """A source value as the string the raw layout keeps (JSON for nested values)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return None if math.isnan(value) else repr(value)
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def records_to_batch(records: Sequence[Mapping[str, Any] | None], positions: Sequence[str],
                     errors: Sequence[str | None], schema: pa.Schema) -> pa.RecordBatch:
    """Raw batch from Python records (``None`` for a record that failed to parse)."""
    names = [n for n in schema.names if n not in (POS, ERROR)]
    data: dict[str, list[Any]] = {n: [as_text(r.get(n)) if r is not None else None for r in records] for n in names}
    data[POS] = list(positions)
    data[ERROR] = list(errors)
    return pa.RecordBatch.from_pydict(data, schema=schema)


class Source:
    """Base of the source kinds: ``batches()`` yields raw batches; ``inputs()`` the lineage refs."""

    def __init__(self, config: Mapping[str, Any], columns: Sequence[Mapping[str, str]], batch_rows: int,
                 bind: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self.columns = [c["name"] for c in columns]
        self.schema = raw_schema(columns)
        self.batch_rows = batch_rows
        self.bind = dict(bind)

    def batches(self) -> Iterator[pa.RecordBatch]:
        return rebatch(self._read(), self.batch_rows)

    def _read(self) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def inputs(self) -> list[lineage.LineageRef]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


# --------------------------------------------------------------------------- files
def _positions(prefix: str, start: int, count: int) -> pa.Array:
    ordinals = pc.cast(pa.array(np.arange(start, start + count, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, ordinals, "")


def _with_meta(table_or_batch: pa.RecordBatch, names: list[str], prefix: str, start: int,
               schema: pa.Schema) -> pa.RecordBatch:
    count = table_or_batch.num_rows
    arrays = [table_or_batch.column(n) if table_or_batch.column(n).type == pa.string()
              else pc.cast(table_or_batch.column(n), pa.string()) for n in names]
    arrays += [_positions(prefix, start, count), pa.nulls(count, pa.string())]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class FileSource(Source):
    """Landing-folder files (``kind: files``) or a file inside an installed package (``kind: package_file``)."""

    _paths: list[Path] | None = None

    def paths(self) -> list[Path]:
        if self._paths is None:
            self._paths = self._find_paths()
        return self._paths

    def _find_paths(self) -> list[Path]:
        if self.config["kind"] == "package_file":
            return [package_file(self.config["package"], self.config["resource"])]
        pattern = Path(self.config["path"])
        pattern = pattern if pattern.is_absolute() else landing_dir() / pattern
        found = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())
        if not found and not self.config.get("allow_empty", False):
            # Files for a date usually arrive late rather than never: let Airflow retry with backoff.
            raise TransientError(f"no files match {pattern}", system=SYSTEM, reason="no_input_files")
        return found

    def describe(self) -> str:
        if self.config["kind"] == "package_file":
            return f"{self.config['package']}:{self.config['resource']} ({self.config['format']})"
        return f"{self.config['path']} under {landing_dir()} ({self.config['format']})"

    def inputs(self) -> list[lineage.LineageRef]:
        if self.config["kind"] == "package_file":
            return [lineage.file_ref(p) for p in self.paths()]
        # One dataset per folder: a new file per day is a new version of the dataset, not a new dataset.
        return lineage.unique(lineage.file_ref(p.parent) for p in self.paths())

    def _read(self) -> Iterator[pa.RecordBatch]:
        reader = {"csv": self._read_csv, "jsonl": self._read_jsonl, "parquet": self._read_parquet}
        for path in self.paths():
            log.info("reading %s", path)
            yield from reader[self.config["format"]](path)

    def _read_csv(self, path: Path) -> Iterator[pa.RecordBatch]:
        import pyarrow.csv as pacsv

        options = self.config.get("csv", {})
        header = options.get("header", self.config["kind"] == "files")
        invalid: list[str] = []

        def on_invalid_row(row: Any) -> str:
            invalid.append(f"malformed_csv_row: expected {row.expected_columns} fields, got "
                           f"{row.actual_columns}: {str(row.text)[:200]!r}")
            return "skip"

        read = pacsv.ReadOptions(skip_rows=options.get("skip_rows", 0), block_size=_CSV_BLOCK_BYTES,
                                 column_names=None if header else self.columns, use_threads=False)
        parse = pacsv.ParseOptions(delimiter=options.get("delimiter", ","), invalid_row_handler=on_invalid_row)
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in self.columns},
                                       include_columns=self.columns, include_missing_columns=False,
                                       strings_can_be_null=True)
        try:
            stream = pacsv.open_csv(str(path), read_options=read, parse_options=parse, convert_options=convert)
        except pa.ArrowInvalid as exc:
            raise DataError(f"{path.name}: cannot read as CSV with columns {self.columns}: {exc}", system=SYSTEM,
                            reason="malformed_file") from exc
        ordinal = 1
        for batch in stream:
            yield _with_meta(batch, self.columns, f"{path.name}:", ordinal, self.schema)
            ordinal += batch.num_rows
            if invalid:
                yield records_to_batch([None] * len(invalid), [f"{path.name}:invalid{ordinal + i}"
                                                               for i in range(len(invalid))], invalid, self.schema)
                invalid.clear()

    def _read_jsonl(self, path: Path) -> Iterator[pa.RecordBatch]:
        records: list[dict[str, Any] | None] = []
        positions: list[str] = []
        errors: list[str | None] = []
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    value, error = None, f"malformed_json: {exc.msg} at column {exc.colno}: {line[:200]!r}"
                else:
                    error = None if isinstance(value, dict) else f"not_an_object: {line[:200]!r}"
                    value = value if isinstance(value, dict) else None
                records.append(value)
                positions.append(f"{path.name}:{number}")
                errors.append(error)
                if len(records) >= self.batch_rows:
                    yield records_to_batch(records, positions, errors, self.schema)
                    records, positions, errors = [], [], []
        if records:
            yield records_to_batch(records, positions, errors, self.schema)

    def _read_parquet(self, path: Path) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        file = pq.ParquetFile(str(path), pre_buffer=False)  # bounded memory: see staging.iter_batches
        missing = [c for c in self.columns if c not in file.schema_arrow.names]
        if missing:
            raise DataError(f"{path.name} lacks column(s) {missing}", system=SYSTEM, reason="missing_columns")
        ordinal = 1
        for batch in file.iter_batches(batch_size=self.batch_rows, columns=self.columns):
            yield _with_meta(batch, self.columns, f"{path.name}:", ordinal, self.schema)
            ordinal += batch.num_rows


def package_file(package: str, resource: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise PermanentError(f"package {package!r} is not installed", system=SYSTEM, reason="package_missing")
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin or "").parent)]
    for root in roots:
        candidate = Path(root) / resource
        if candidate.is_file():
            return candidate
    raise PermanentError(f"{resource!r} not found in package {package!r} ({roots})", system=SYSTEM,
                         reason="package_file_missing")


# --------------------------------------------------------------------------- HTTP JSON API
def origin(url: str) -> str:
    """``scheme://host:port`` of a URL, with the scheme's default port made explicit."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def dig(document: Any, path: str) -> Any:
    """``a.b.0.c`` inside nested dicts/lists; ``""`` is the document itself; missing -> ``None``."""
    value = document
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


class HttpSource(Source):
    """A paginated JSON API. Idempotent GETs: transient failures are retried inside the task too."""

    max_redirects = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._allowed_origins: set[str] = set()
        self._url, self._headers, self._auth = self._endpoint()
        self._allowed_origins.add(origin(self._url))

    def _endpoint(self) -> tuple[str, dict[str, str], Any]:
        headers = {"Accept": "application/json", **self.config.get("headers", {})}
        auth = None
        url = self.config.get("url", "")
        conn_id = self.config.get("conn_id")
        self._allowed_origins.update(origin(o) for o in self.config.get("allowed_origins") or [])
        if conn_id:
            from airflow.sdk import BaseHook

            conn = BaseHook.get_connection(conn_id)
            host = conn.host or ""
            base = host if "://" in host else f"{conn.schema or 'http'}://{host}"
            if conn.port:
                base = f"{base.rstrip('/')}:{conn.port}"
            url = url or base.rstrip("/") + "/" + self.config.get("endpoint", "").lstrip("/")
            extra = conn.extra_dejson or {}
            headers.update({str(k): str(v) for k, v in (extra.get("headers") or {}).items()})
            self._allowed_origins.update(origin(o) for o in extra.get("allowed_origins") or [])
            if conn.login:
                auth = (conn.login, conn.password or "")
            elif conn.password:
                headers["Authorization"] = f"Bearer {conn.password}"
        elif self.config.get("endpoint"):
            url = url.rstrip("/") + "/" + self.config["endpoint"].lstrip("/")
        if not url:
            raise PermanentError("http source needs 'url' or 'conn_id'", system=SYSTEM, reason="config:http")
        return url, headers, auth

    def describe(self) -> str:
        return f"GET {self._url} ({self.config.get('pagination', {}).get('type', 'none')} pagination)"

    def inputs(self) -> list[lineage.LineageRef]:
        return [lineage.http_ref(self._url)]

    def _check_origin(self, url: str, why: str) -> None:
        """Our headers and credentials go only to the configured origin (scheme, host, port) or one the
        Connection (extra ``allowed_origins``) or the spec allow-lists; a page link or a redirect
        elsewhere is refused before anything is sent there."""
        if origin(url) not in self._allowed_origins:
            raise SecurityError(f"{why} points to {origin(url)}, which is not the configured origin "
                                f"{origin(self._url)} nor in allowed_origins; nothing was sent there",
                                system=SYSTEM, reason="http:foreign_origin")

    def _get(self, session: Any, url: str, params: Mapping[str, Any] | None) -> Any:
        from tributary.core.retry import call_with_retry

        def once() -> Any:
            target, query = url, params
            for _ in range(self.max_redirects + 1):
                self._check_origin(target, "the request" if target == url else "a redirect")
                # Redirects are followed here, not by requests, so each hop is checked before it is sent.
                response = session.get(target, params=query, headers=self._headers, auth=self._auth,
                                       timeout=float(self.config.get("timeout", 30)), allow_redirects=False)
                if not response.is_redirect:
                    response.raise_for_status()
                    return response
                target, query = requests.compat.urljoin(target, response.headers["Location"]), None
            raise PermanentError(f"GET {url}: more than {self.max_redirects} redirects", system=SYSTEM,
                                 reason="http:redirects")

        import requests

        return call_with_retry(once, what=f"GET {url}")

    def pages(self) -> Iterator[list[Any]]:
        import requests

        paging = {"type": "none", **self.config.get("pagination", {})}
        kind = paging["type"]
        size = int(paging.get("page_size", 100))
        max_pages = int(paging.get("max_pages", 10000))
        params: dict[str, Any] = dict(self.config.get("params", {}))
        url: str | None = self._url
        if kind == "page":
            params[paging.get("page_param", "page")] = int(paging.get("start", 1))
            params[paging.get("size_param", "page_size")] = size
        elif kind == "offset":
            params[paging.get("offset_param", "offset")] = int(paging.get("start", 0))
            params[paging.get("limit_param", "limit")] = size
        with requests.Session() as session:
            for page in range(1, max_pages + 1):
                response = self._get(session, url, params)
                document = response.json()
                records = dig(document, self.config.get("records_path", ""))
                if not isinstance(records, list):
                    raise DataError(f"{response.url}: records_path {self.config.get('records_path', '')!r} is not "
                                    f"a list in the response", system=SYSTEM, reason="malformed_response")
                log.info("page %d: %d records", page, len(records))
                yield records
                if not records or kind == "none":
                    return
                if kind == "page":
                    if len(records) < size:
                        return
                    params[paging.get("page_param", "page")] += 1
                elif kind == "offset":
                    if len(records) < size:
                        return
                    params[paging.get("offset_param", "offset")] += len(records)
                elif kind == "cursor":
                    cursor = dig(document, paging.get("cursor_path", "next_cursor"))
                    if cursor in (None, ""):
                        return
                    params[paging.get("cursor_param", "cursor")] = cursor
                elif kind == "next_url":
                    following = (dig(document, paging["next_url_path"]) if paging.get("next_url_path")
                                 else response.links.get("next", {}).get("url"))
                    if not following:
                        return
                    url, params = requests.compat.urljoin(response.url, following), None
                    self._check_origin(url, "the next-page link")
        raise PermanentError(f"{self._url}: pagination did not end after {max_pages} pages (pagination.max_pages)",
                             system=SYSTEM, reason="pagination")

    def _read(self) -> Iterator[pa.RecordBatch]:
        for page, records in enumerate(self.pages(), start=1):
            if not records:
                continue
            parsed = [r if isinstance(r, Mapping) else None for r in records]
            errors = [None if r is not None else f"not_an_object: {json.dumps(o)[:200]}"
                      for r, o in zip(parsed, records, strict=True)]
            yield records_to_batch(parsed, [f"page{page}:{i}" for i in range(1, len(records) + 1)], errors,
                                   self.schema)


# --------------------------------------------------------------------------- PostgreSQL
class SqlSource(Source):
    """A query against PostgreSQL (``conn_id``, default the warehouse), streamed with a server-side cursor.

    Bind parameters ``%(partition)s``, ``%(ds)s``, ``%(data_interval_start)s``, ``%(data_interval_end)s``
    and ``%(run_id)s`` are filled in; the query is also rendered by Jinja like every source field.
    """

    @property
    def conn_id(self) -> str:
        return self.config.get("conn_id") or WAREHOUSE_CONN_ID

    def describe(self) -> str:
        return f"query on {self.conn_id}: {' '.join(self.config['query'].split())[:200]}"

    def inputs(self) -> list[lineage.LineageRef]:
        return lineage.sql_input_refs(self.conn_id, self.config["query"])

    def _read(self) -> Iterator[pa.RecordBatch]:
        # A plain PostgresHook, not WarehouseHook: a source is only read, and may be a database that
        # is not the warehouse (where applying our migrations would be wrong).
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        query = self.config["query"]
        conn = PostgresHook(postgres_conn_id=self.conn_id).get_conn()
        try:
            with conn.cursor(name="tributary_pipeline_source") as cursor:
                cursor.itersize = self.batch_rows
                cursor.execute(query, self.bind if "%(" in query else None)
                ordinal = 1
                names: list[str] | None = None
                while True:
                    rows = cursor.fetchmany(self.batch_rows)
                    if names is None:
                        names = [d[0] for d in cursor.description or []]
                        missing = [c for c in self.columns if c not in names]
                        if missing:
                            raise DataError(f"query result lacks column(s) {missing} (has {names})", system=SYSTEM,
                                            reason="missing_columns")
                    if not rows:
                        break
                    records = [dict(zip(names, row, strict=True)) for row in rows]
                    yield records_to_batch(records, [f"row{ordinal + i}" for i in range(len(rows))],
                                           [None] * len(rows), self.schema)
                    ordinal += len(rows)
        finally:
            conn.rollback()
            conn.close()


_KINDS: dict[str, type[Source]] = {"files": FileSource, "package_file": FileSource, "http": HttpSource,
                                   "sql": SqlSource}


def open_source(config: Mapping[str, Any], columns: Sequence[Mapping[str, str]], batch_rows: int,
                bind: Mapping[str, Any] | None = None) -> Source:
    try:
        kind = _KINDS[config["kind"]]
    except KeyError as exc:
        raise PermanentError(f"unknown source kind {config.get('kind')!r}", system=SYSTEM, reason="config") from exc
    return kind(config, columns, batch_rows, bind or {})
