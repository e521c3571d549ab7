"""Where training and scoring rows come from, and which of them form the holdout.

A ``DatasetSource`` is built from a JSON spec, the ``source`` param of the ``ml_*`` DAGs. The spec is
also stored as a tag on every registered model version, so deploy and later gates can rebuild the
exact data (and holdout) a model was judged on::

    {"kind": "sklearn", "dataset": "breast_cancer"}            bundled with scikit-learn, offline (default)
    {"kind": "parquet", "path": "/data/ml/wine", "target": "target", "key": "row_id"}
    {"kind": "postgres", "table": "public.ml_wine", "target": "target", "key": "row_id",
     "conn_id": "tributary_warehouse"}

Optional for every kind: ``exclude`` (columns that are not features), ``filters`` (column -> value,
equality, e.g. one hive partition), ``partition_column`` (batch scoring filters it on the score date).
Features are every column except the key, the target, ``exclude`` and hive partition columns.

The holdout is decided per row by a salted hash of its key, not by a random permutation: a row is
in the holdout or not regardless of which other rows exist, so models trained on different
snapshots of a growing dataset are still compared on rows none of them trained on.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tributary.core.errors import DataError, PermanentError
from tributary.core.params import conn_id_schema
from tributary.ml import SYSTEM
from tributary.storage import WAREHOUSE_CONN_ID

if TYPE_CHECKING:
    import pandas as pd

SPLIT_SALT = "tributary-holdout-v1"
HOLDOUT_PERCENT = 25
SKLEARN_DATASETS = ("breast_cancer", "wine", "iris")
DEFAULT_SOURCE: dict[str, Any] = {"kind": "sklearn", "dataset": "breast_cancer"}
# The table ml_pipeline_breast_cancer stores (validated, deduplicated, one partition per date): the
# default of the ml_* DAGs, so the lifecycle runs on what the data pipeline delivered.
PIPELINE_SOURCE: dict[str, Any] = {"kind": "postgres", "table": "public.ml_dataset_breast_cancer",
                                   "key": "record_key", "target": "target", "exclude": ["run_id", "loaded_at"],
                                   "partition_column": "ds"}
# JSON schema of the ``source`` param (the Trigger form and the REST API check it before a run exists).
SOURCE_PARAM_SCHEMA: dict[str, Any] = {
    "required": ["kind"],
    "additionalProperties": False,
    "properties": {
        "kind": {"type": "string", "enum": ["sklearn", "parquet", "postgres"]},
        "dataset": {"type": "string", "enum": list(SKLEARN_DATASETS)},
        "path": {"type": "string", "minLength": 1},
        "table": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$"},
        # a run may read only the Connections the DAG is allowed to use (core.conn_policy)
        "conn_id": conn_id_schema(WAREHOUSE_CONN_ID),
        "key": {"type": "string", "minLength": 1},
        "target": {"type": ["string", "null"]},
        "exclude": {"type": "array", "items": {"type": "string"}},
        "filters": {"type": "object"},
        "partition_column": {"type": ["string", "null"]},
    },
}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_COMMON_KEYS = {"kind", "target", "key", "exclude", "filters", "partition_column"}


def split_spec() -> dict[str, Any]:
    """What defines the holdout; recorded on every run and model version."""
    return {"method": "blake2b(salt:key) mod 100", "salt": SPLIT_SALT, "holdout_percent": HOLDOUT_PERCENT}


def holdout_mask(keys: Iterable[Any]) -> list[bool]:
    """True for rows in the holdout: a stable hash of (salt, key), independent of the other rows."""
    mask = []
    for key in keys:
        digest = hashlib.blake2b(f"{SPLIT_SALT}:{key}".encode(), digest_size=8).digest()
        mask.append(int.from_bytes(digest, "big") % 100 < HOLDOUT_PERCENT)
    return mask


def fingerprint(keys: Iterable[Any]) -> str:
    """A short digest of a set of row keys (which rows a holdout held)."""
    digest = hashlib.sha256()
    for key in sorted(str(k) for k in keys):
        digest.update(key.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class DatasetSource(ABC):
    """A table of rows with a key column, feature columns and (for training) a target column."""

    kind: ClassVar[str]
    key: str = "row_id"
    target: str | None = "target"
    exclude: tuple[str, ...] = ()
    filters: tuple[tuple[str, Any], ...] = ()
    partition_column: str | None = None

    # ------------------------------------------------------------------ identity
    @property
    @abstractmethod
    def name(self) -> str:
        """A short, stable name (``sklearn:wine``, ``postgres:public.ml_wine``); partitions predictions."""

    @abstractmethod
    def lineage(self) -> tuple[str, str]:
        """(namespace, name) of the dataset, following the OpenLineage naming conventions."""

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, **self._own_spec(), "key": self.key, "target": self.target}
        if self.exclude:
            spec["exclude"] = list(self.exclude)
        if self.filters:
            spec["filters"] = dict(self.filters)
        if self.partition_column:
            spec["partition_column"] = self.partition_column
        return spec

    @abstractmethod
    def _own_spec(self) -> dict[str, Any]: ...

    def with_filters(self, **filters: Any) -> DatasetSource:
        merged = {**dict(self.filters), **filters}
        return replace(self, filters=tuple(sorted(merged.items())))

    # ------------------------------------------------------------------ rows
    @abstractmethod
    def load(self) -> pd.DataFrame:
        """Every row (after ``filters``) as one DataFrame."""

    def iter_batches(self, batch_size: int) -> Iterator[pd.DataFrame]:
        """Rows in DataFrames of at most ``batch_size`` rows; sources override this to bound memory."""
        frame = self.load()
        for start in range(0, len(frame), batch_size):
            yield frame.iloc[start:start + batch_size]

    def non_feature_columns(self) -> set[str]:
        return {self.key, *([self.target] if self.target else []), *self.exclude,
                *([self.partition_column] if self.partition_column else [])}

    # ------------------------------------------------------------------ partitions
    def partitions(self) -> list[str]:
        """Values of ``partition_column`` present (after the other filters), oldest first."""
        return []

    def pinned(self, partition: str | None = None) -> DatasetSource:
        """One partition of a partitioned source: ``partition``, else the one ``filters`` names, else the newest.

        A model is trained and judged on one snapshot: every date of a pipeline's table holds its
        own copy of the rows, so reading all of them would repeat each key once per date.
        """
        column = self.partition_column
        if not column:
            return self
        if partition is None:
            named = dict(self.filters).get(column)
            if named is not None:
                return self
            stored = self.partitions()
            if not stored:
                raise DataError(f"{self.name}: no partitions stored yet (column {column!r}); run the pipeline that "
                                "fills it first", system=SYSTEM, reason="partition_missing")
            partition = stored[-1]
        return self.with_filters(**{column: str(partition)})

    def feature_columns(self, frame: pd.DataFrame) -> list[str]:
        features = [c for c in frame.columns if c not in self.non_feature_columns()]
        if not features:
            raise DataError(f"{self.name}: no feature columns left", system=SYSTEM, reason="no_features")
        return features

    def check_columns(self, frame: pd.DataFrame, *, labelled: bool) -> None:
        needed = [self.key] + ([self.target] if labelled and self.target else [])
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataError(f"{self.name}: missing column(s) {missing}; has {list(frame.columns)[:20]}",
                            system=SYSTEM, reason="missing_columns")
        if labelled and not self.target:
            raise PermanentError(f"{self.name}: training needs a target column", system=SYSTEM,
                                 reason="config:source")


@dataclass(frozen=True, kw_only=True)
class SklearnSource(DatasetSource):
    """A dataset bundled with scikit-learn (no download). The key is the row's position."""

    kind: ClassVar[str] = "sklearn"
    dataset: str = "breast_cancer"

    @property
    def name(self) -> str:
        return f"sklearn:{self.dataset}"

    def lineage(self) -> tuple[str, str]:
        return "sklearn", f"datasets/{self.dataset}"

    def _own_spec(self) -> dict[str, Any]:
        return {"dataset": self.dataset}

    def load(self) -> pd.DataFrame:
        from sklearn import datasets

        loader = getattr(datasets, f"load_{self.dataset}")
        frame = loader(as_frame=True).frame.copy()
        frame = frame.rename(columns={"target": self.target or "target"})
        frame.insert(0, self.key, [str(i) for i in range(len(frame))])
        for column, value in self.filters:
            frame = frame[frame[column] == value]
        return frame.reset_index(drop=True)


@dataclass(frozen=True, kw_only=True)
class ParquetSource(DatasetSource):
    """A Parquet file or a (hive-partitioned) folder of Parquet files, read in Arrow record batches."""

    kind: ClassVar[str] = "parquet"
    path: str = ""

    @property
    def name(self) -> str:
        return f"parquet:{self.path}"

    def lineage(self) -> tuple[str, str]:
        return "file", str(Path(self.path).resolve())

    def _own_spec(self) -> dict[str, Any]:
        return {"path": self.path}

    def _dataset(self) -> Any:
        import pyarrow.dataset as ds

        if not Path(self.path).exists():
            raise DataError(f"{self.name}: no such file or folder", system=SYSTEM, reason="source_missing")
        return ds.dataset(self.path, format="parquet", partitioning="hive")

    def _filter(self, without: str | None = None) -> Any:
        import pyarrow.dataset as ds

        expression = None
        for column, value in self.filters:
            if column == without:
                continue
            term = ds.field(column) == value
            expression = term if expression is None else expression & term
        return expression

    def non_feature_columns(self) -> set[str]:
        dataset = self._dataset()
        partitioning = getattr(dataset, "partitioning", None)
        partition_names = set(partitioning.schema.names) if partitioning is not None else set()
        return super().non_feature_columns() | partition_names

    def partitions(self) -> list[str]:
        import pyarrow.compute as pc

        column = self.partition_column
        if not column:
            return []
        table = self._dataset().to_table(columns=[column], filter=self._filter(without=column))
        return sorted({str(v) for v in pc.unique(table.column(column)).to_pylist() if v is not None})

    def load(self) -> pd.DataFrame:
        import pandas as pd

        batches = list(self.iter_batches(1 << 16))
        if not batches:
            return pd.DataFrame(columns=self._dataset().schema.names)
        return pd.concat(batches, ignore_index=True)

    def iter_batches(self, batch_size: int) -> Iterator[pd.DataFrame]:
        for batch in self._dataset().to_batches(filter=self._filter(), batch_size=batch_size):
            if batch.num_rows:
                yield batch.to_pandas()


@dataclass(frozen=True, kw_only=True)
class PostgresSource(DatasetSource):
    """A warehouse table, streamed with a server-side cursor; ``numeric`` columns arrive as floats."""

    kind: ClassVar[str] = "postgres"
    table: str = ""
    conn_id: str = WAREHOUSE_CONN_ID

    @property
    def name(self) -> str:
        return f"postgres:{self.table}"

    def lineage(self) -> tuple[str, str]:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(self.conn_id)
        schema, _, table = self.table.rpartition(".")
        return f"postgres://{conn.host}:{conn.port or 5432}", f"{conn.schema}.{schema or 'public'}.{table}"

    def _own_spec(self) -> dict[str, Any]:
        return {"table": self.table, "conn_id": self.conn_id}

    def _where(self, without: str | None = None) -> tuple[str, list[Any]]:
        filters = [(column, value) for column, value in self.filters if column != without]
        if not filters:
            return "", []
        return (" WHERE " + " AND ".join(f"{_quote_identifier(column)} = %s" for column, _ in filters),
                [value for _, value in filters])

    def _query(self) -> tuple[str, list[Any]]:
        # The table matched _IDENTIFIER and columns are quoted, so nothing here is injectable.
        where, values = self._where()
        query = f"SELECT * FROM {'.'.join(_quote_identifier(p) for p in self.table.split('.'))}{where}"
        return f"{query} ORDER BY {_quote_identifier(self.key)}", values

    def _connect(self) -> Any:
        # A plain PostgresHook, not WarehouseHook: a source is only read, and may be a database that
        # is not the warehouse (where applying our migrations would be wrong).
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=self.conn_id).get_conn()

    def partitions(self) -> list[str]:
        column = self.partition_column
        if not column:
            return []
        where, values = self._where(without=column)
        table = ".".join(_quote_identifier(p) for p in self.table.split("."))
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT DISTINCT {_quote_identifier(column)} FROM {table}{where}", values)
                return sorted(str(row[0]) for row in cur.fetchall() if row[0] is not None)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == "42P01":  # undefined_table
                raise DataError(f"{self.name}: table {self.table} does not exist (has its pipeline run yet?)",
                                system=SYSTEM, reason="source_missing") from exc
            raise
        finally:
            conn.rollback()
            conn.close()

    def load(self) -> pd.DataFrame:
        import pandas as pd

        frames = list(self.iter_batches(50_000))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def iter_batches(self, batch_size: int) -> Iterator[pd.DataFrame]:
        import pandas as pd

        conn = self._connect()
        try:
            query, values = self._query()
            with conn.cursor(name="tributary_dataset_source") as cur:  # server-side: bounded memory
                cur.itersize = batch_size
                cur.execute(query, values)
                while rows := cur.fetchmany(batch_size):
                    yield _numeric_as_float(pd.DataFrame(rows, columns=[d[0] for d in cur.description]))
        finally:
            conn.rollback()
            conn.close()


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _numeric_as_float(frame: pd.DataFrame) -> pd.DataFrame:
    """PostgreSQL ``numeric`` arrives as ``Decimal`` objects; models want floats."""
    from decimal import Decimal

    for column in frame.columns:
        if frame[column].dtype == object:
            sample = frame[column].dropna()
            if len(sample) and isinstance(sample.iloc[0], Decimal):
                frame[column] = frame[column].astype(float)
    return frame


_KINDS: dict[str, type[DatasetSource]] = {"sklearn": SklearnSource, "parquet": ParquetSource,
                                          "postgres": PostgresSource}
_OWN_KEYS = {"sklearn": {"dataset"}, "parquet": {"path"}, "postgres": {"table", "conn_id"}}


def _config_error(message: str) -> PermanentError:
    return PermanentError(f"invalid dataset source: {message}", system=SYSTEM, reason="config:source")


def source_from_spec(spec: Mapping[str, Any] | DatasetSource | None) -> DatasetSource:
    """Build a source from its JSON spec (see the module docstring); ``None`` is the default source."""
    if isinstance(spec, DatasetSource):
        return spec
    spec = dict(DEFAULT_SOURCE if spec is None else spec)
    kind = spec.pop("kind", None)
    if kind not in _KINDS:
        raise _config_error(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    unknown = set(spec) - _COMMON_KEYS - _OWN_KEYS[kind]
    if unknown:
        raise _config_error(f"unknown field(s) {sorted(unknown)} for kind {kind!r}")
    args: dict[str, Any] = {k: v for k, v in spec.items() if k in _OWN_KEYS[kind]}
    if "key" in spec:
        args["key"] = str(spec["key"])
    if "target" in spec:
        args["target"] = None if spec["target"] in (None, "") else str(spec["target"])
    if "exclude" in spec:
        if not isinstance(spec["exclude"], list | tuple):
            raise _config_error("exclude must be a list of column names")
        args["exclude"] = tuple(str(c) for c in spec["exclude"])
    if "filters" in spec:
        if not isinstance(spec["filters"], Mapping):
            raise _config_error("filters must be an object (column -> value)")
        args["filters"] = tuple(sorted((str(k), v) for k, v in spec["filters"].items()))
    if spec.get("partition_column"):
        args["partition_column"] = str(spec["partition_column"])
    if kind == "sklearn" and args.get("dataset", "breast_cancer") not in SKLEARN_DATASETS:
        raise _config_error(f"dataset must be one of {list(SKLEARN_DATASETS)}")
    if kind == "parquet" and not args.get("path"):
        raise _config_error("parquet sources need a path")
    if kind == "postgres" and not _IDENTIFIER.match(str(args.get("table", ""))):
        raise _config_error("postgres sources need table as 'name' or 'schema.name'")
    return _KINDS[kind](**args)


@dataclass
class LabelledData:
    """A loaded source split into features/target, with the holdout marked."""

    source: DatasetSource
    frame: pd.DataFrame
    features: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, source: DatasetSource) -> LabelledData:
        frame = source.load()
        source.check_columns(frame, labelled=True)
        if frame[source.target].isna().any():
            raise DataError(f"{source.name}: {int(frame[source.target].isna().sum())} rows have no label",
                            system=SYSTEM, reason="missing_labels")
        if frame[source.key].duplicated().any():
            raise DataError(f"{source.name}: duplicate keys in column {source.key!r}", system=SYSTEM,
                            reason="duplicate_keys")
        frame = frame.assign(**{source.key: frame[source.key].astype(str)})
        return cls(source, frame.reset_index(drop=True), source.feature_columns(frame))

    def _part(self, holdout: bool) -> pd.DataFrame:
        mask = holdout_mask(self.frame[self.source.key])
        part = self.frame[[m == holdout for m in mask]].reset_index(drop=True)
        if len(part) < 2 or part[self.source.target].nunique() < 2:
            which = "holdout" if holdout else "training part"
            raise DataError(f"{self.source.name}: the {which} has {len(part)} rows and fewer than two classes",
                            system=SYSTEM, reason="too_few_rows")
        return part

    def train(self) -> pd.DataFrame:
        return self._part(holdout=False)

    def holdout(self) -> pd.DataFrame:
        return self._part(holdout=True)

    def xy(self, part: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
        return part[self.features], part[self.source.target]
