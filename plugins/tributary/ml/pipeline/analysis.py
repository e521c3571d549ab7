"""Analysis of a stored partition: summary statistics and drift against the previous partition.

One streaming pass per partition (batches of ``batch_rows``) computes exact counts, nulls, mean,
standard deviation, minimum and maximum of every numeric column, and keeps a uniform sample of at
most ``sample_rows`` rows (bottom-k on random priorities; the whole partition when it is smaller).
Quantiles, drift and charts use the sample:

* **PSI** (population stability index) per numeric column, on ``bins`` quantile bins of the
  previous partition plus one bin below its minimum and one above its maximum, with proportions
  floored at 1e-4; below 0.1 stable, 0.1-0.2 moderate, above ``psi_alert`` (default 0.2) a
  significant shift;
* **KS** two-sample statistic and p-value (scipy).

The report (``analysis.html`` + ``analysis.json`` + ``psi.png`` + ``distributions.png``) goes to the
run's report folder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tributary.ml.pipeline.reporting import esc, table, write_json, write_page
from tributary.ml.pipeline.specs import NUMERIC_TYPES, output_columns
from tributary.ml.pipeline.staging import iter_batches

log = logging.getLogger(__name__)
PSI_FLOOR = 1e-4
PSI_MODERATE = 0.1


@dataclass
class PartitionProfile:
    """Exact streaming statistics plus a uniform sample of one partition's numeric columns."""

    rows: int = 0
    count: dict[str, int] = field(default_factory=dict)
    total: dict[str, float] = field(default_factory=dict)
    squares: dict[str, float] = field(default_factory=dict)
    low: dict[str, float] = field(default_factory=dict)
    high: dict[str, float] = field(default_factory=dict)
    sample: dict[str, np.ndarray] = field(default_factory=dict)

    def column_summary(self, name: str) -> dict[str, Any]:
        count = self.count.get(name, 0)
        mean = self.total[name] / count if count else None
        std = (math.sqrt(max(0.0, (self.squares[name] - self.total[name] ** 2 / count) / (count - 1)))
               if count > 1 else None)
        values = self.sample.get(name, np.array([]))
        values = values[~np.isnan(values)]
        quantiles = np.quantile(values, [0.25, 0.5, 0.75]).tolist() if values.size else [None] * 3
        return {"count": count, "nulls": self.rows - count, "mean": mean, "std": std,
                "min": self.low.get(name), "p25": quantiles[0], "median": quantiles[1], "p75": quantiles[2],
                "max": self.high.get(name)}


def numeric_columns(spec: Mapping[str, Any]) -> list[str]:
    return [name for name, kind in output_columns(spec) if kind in NUMERIC_TYPES]


def profile(path: Path, columns: Sequence[str], batch_rows: int, sample_rows: int, seed: int = 0) -> PartitionProfile:
    """Stream ``path`` once; exact statistics and a bottom-k sample of at most ``sample_rows`` rows."""
    rng = np.random.default_rng(seed)
    result = PartitionProfile()
    priorities = np.empty(0)
    kept: dict[str, np.ndarray] = {c: np.empty(0) for c in columns}
    for batch in iter_batches(path, batch_rows, columns=list(columns)):
        result.rows += batch.num_rows
        arrays = {c: batch.column(c).to_numpy(zero_copy_only=False).astype("float64") for c in columns}
        for name, values in arrays.items():
            present = values[~np.isnan(values)]
            result.count[name] = result.count.get(name, 0) + int(present.size)
            result.total[name] = result.total.get(name, 0.0) + float(present.sum())
            result.squares[name] = result.squares.get(name, 0.0) + float(np.square(present).sum())
            if present.size:
                result.low[name] = min(result.low.get(name, math.inf), float(present.min()))
                result.high[name] = max(result.high.get(name, -math.inf), float(present.max()))
        priorities = np.concatenate([priorities, rng.random(batch.num_rows)])
        kept = {c: np.concatenate([kept[c], arrays[c]]) for c in columns}
        if priorities.size > sample_rows:
            keep = np.argpartition(priorities, sample_rows)[:sample_rows]
            priorities = priorities[keep]
            kept = {c: v[keep] for c, v in kept.items()}
    result.sample = kept
    return result


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float | None:
    """Population stability index of ``actual`` against ``expected`` on quantile bins of ``expected``."""
    expected, actual = expected[~np.isnan(expected)], actual[~np.isnan(actual)]
    if not expected.size or not actual.size:
        return None
    quantiles = np.quantile(expected, np.linspace(0, 1, bins + 1))
    # Edges at the reference's quantiles, its minimum, and just above its maximum: values outside the
    # reference range get bins of their own, and a discrete or constant column keeps its values apart.
    edges = np.unique(np.append(quantiles[:-1], np.nextafter(quantiles[-1], np.inf)))
    slots = edges.size + 1
    share_e = np.bincount(np.searchsorted(edges, expected, side="right"), minlength=slots) / expected.size
    share_a = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=slots) / actual.size
    share_e, share_a = np.maximum(share_e, PSI_FLOOR), np.maximum(share_a, PSI_FLOOR)
    return float(np.sum((share_a - share_e) * np.log(share_a / share_e)))


def ks(expected: np.ndarray, actual: np.ndarray) -> tuple[float | None, float | None]:
    from scipy.stats import ks_2samp

    expected, actual = expected[~np.isnan(expected)], actual[~np.isnan(actual)]
    if not expected.size or not actual.size:
        return None, None
    outcome = ks_2samp(expected, actual)
    return float(outcome.statistic), float(outcome.pvalue)


def _charts(folder: Path, current: PartitionProfile, previous: PartitionProfile | None, drift: dict[str, Any],
            columns: Sequence[str], labels: tuple[str, str], psi_alert: float) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []
    if drift:
        names = sorted(drift, key=lambda n: drift[n]["psi"] if drift[n]["psi"] is not None else -1)
        values = [drift[n]["psi"] or 0.0 for n in names]
        figure, axes = plt.subplots(figsize=(8, max(2.5, 0.28 * len(names) + 1)))
        colors = ["#b00020" if v > psi_alert else "#a15c00" if v > PSI_MODERATE else "#176b2c" for v in values]
        axes.barh(names, values, color=colors)
        axes.axvline(PSI_MODERATE, color="#a15c00", linestyle=":", linewidth=1)
        axes.axvline(psi_alert, color="#b00020", linestyle="--", linewidth=1)
        axes.set_xlabel(f"PSI, {labels[0]} vs {labels[1]}")
        axes.tick_params(axis="y", labelsize=7)
        figure.tight_layout()
        figure.savefig(folder / "psi.png", dpi=90)
        plt.close(figure)
        images.append("psi.png")
    ranked = sorted(columns, key=lambda n: -(drift.get(n, {}).get("psi") or 0.0))[:9]
    if ranked:
        rows = math.ceil(len(ranked) / 3)
        figure, grid = plt.subplots(rows, 3, figsize=(11, 2.8 * rows), squeeze=False)
        for axes, name in zip(grid.flat, ranked, strict=False):
            now = current.sample[name][~np.isnan(current.sample[name])]
            before = previous.sample[name][~np.isnan(previous.sample[name])] if previous else np.empty(0)
            both = np.concatenate([now, before])
            edges = np.histogram_bin_edges(both, bins=30) if both.size else 10
            if before.size:
                axes.hist(before, bins=edges, density=True, alpha=0.5, label=labels[1], color="#888888")
            axes.hist(now, bins=edges, density=True, alpha=0.6, label=labels[0], color="#1f77b4")
            value = drift.get(name, {}).get("psi")
            title = name if value is None else f"{name} (PSI {value:.3f})"
            axes.set_title(title, fontsize=8)
            axes.tick_params(labelsize=7)
        for axes in list(grid.flat)[len(ranked):]:
            axes.axis("off")
        grid.flat[0].legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(folder / "distributions.png", dpi=80)
        plt.close(figure)
        images.append("distributions.png")
    return images


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def analyze(spec: Mapping[str, Any], current_path: Path, partition: str, previous_path: Path | None,
            previous: str | None, folder: Path) -> dict[str, Any]:
    """Profile the partition (and the previous one), compute drift, write the report; returns the summary."""
    settings = spec["analysis"]
    columns = numeric_columns(spec)
    batch_rows, sample_rows = int(spec["processing"]["batch_rows"]), int(settings["sample_rows"])
    current = profile(current_path, columns, batch_rows, sample_rows, seed=1)
    before = profile(previous_path, columns, batch_rows, sample_rows, seed=2) if previous_path else None
    drift: dict[str, dict[str, Any]] = {}
    if before is not None:
        for name in columns:
            statistic, pvalue = ks(before.sample[name], current.sample[name])
            drift[name] = {"psi": psi(before.sample[name], current.sample[name], int(settings["bins"])),
                           "ks": statistic, "ks_pvalue": pvalue}
    psi_alert = float(settings["psi_alert"])
    drifted = sorted(n for n, d in drift.items() if d["psi"] is not None and d["psi"] > psi_alert)
    psi_values = [d["psi"] for d in drift.values() if d["psi"] is not None]
    images = _charts(folder, current, before, drift, columns, (partition, previous or ""), psi_alert)

    summary = {
        "pipeline": spec["name"], "partition": partition, "previous_partition": previous, "rows": current.rows,
        "previous_rows": before.rows if before else None, "columns": {n: current.column_summary(n) for n in columns},
        "drift": drift, "max_psi": max(psi_values) if psi_values else None, "drifted": drifted,
        "psi_alert": psi_alert, "sample_rows": sample_rows, "images": images,
    }
    json_path = write_json(folder / "analysis.json", summary)
    stats_table = table(["column", "count", "nulls", "mean", "std", "min", "p25", "median", "p75", "max"],
                        [(n, *(_fmt(v) for v in s.values())) for n, s in summary["columns"].items()])
    sections = [f"<p>{current.rows:,} rows in partition <b>{esc(partition)}</b>; previous partition: "
                f"<b>{esc(previous or 'none')}</b>.</p>", "<h2>Summary statistics</h2>", stats_table]
    if drift:
        flag = {True: '<span class="bad">shifted</span>', False: ""}
        sections += [f"<h2>Drift against {esc(previous)}</h2>",
                     f"<p>PSI above {psi_alert} marks a significant shift; KS on samples of up to "
                     f"{sample_rows:,} rows.</p>",
                     table(["column", "PSI", "KS statistic", "KS p-value", ""],
                           [(n, _fmt(d["psi"]), _fmt(d["ks"]), _fmt(d["ks_pvalue"]),
                             flag[n in drifted]) for n, d in drift.items()], raw_columns=frozenset({4}))]
    else:
        sections.append("<h2>Drift</h2><p>No earlier partition to compare with.</p>")
    sections += [f'<p><img src="{esc(image)}" alt="{esc(image)}"></p>' for image in images]
    html_path = write_page(folder / "analysis.html", f"Analysis: {spec['name']} {partition}", sections)
    summary.update(report_html=str(html_path), report_json=str(json_path))
    return summary
