"""Error analysis: aggregate outcome events, flag spikes, write a report with a chart.

The SQL aggregation runs in the warehouse; spike detection and rendering are pure functions.
A spike is a (dimension, value) whose failures on the report day exceed ``factor`` times its
trailing daily average over ``window`` days, with at least ``min_count`` failures.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

DIMENSIONS = ("error_class", "system", "dag_id")

AGGREGATE_SQL = """
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day,
       coalesce(error_class, 'none') AS error_class,
       coalesce(system, 'unknown') AS system,
       dag_id,
       count(*) FILTER (WHERE kind = 'failure') AS failures,
       count(*) FILTER (WHERE kind = 'retry') AS retries,
       count(*) FILTER (WHERE kind = 'success') AS successes
FROM error_events
WHERE occurred_at >= %(since)s AND occurred_at < %(until)s
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4
"""


@dataclass(frozen=True)
class Spike:
    dimension: str
    value: str
    day: date
    count: int
    trailing_mean: float

    def describe(self) -> str:
        return (f"{self.dimension}={self.value}: {self.count} failures on {self.day} "
                f"vs {self.trailing_mean:.1f}/day before")


def fetch_aggregates(conn: Any, report_day: date, window: int) -> list[dict[str, Any]]:
    since = report_day - timedelta(days=window)
    with conn.cursor() as cur:
        cur.execute(AGGREGATE_SQL, {"since": since, "until": report_day + timedelta(days=1)})
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def daily_failures(rows: Iterable[Mapping[str, Any]], dimension: str) -> dict[str, dict[date, int]]:
    series: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        series[str(row[dimension])][row["day"]] += int(row["failures"])
    return series


def find_spikes(
    rows: list[Mapping[str, Any]],
    report_day: date,
    window: int = 7,
    factor: float = 2.0,
    min_count: int = 3,
) -> list[Spike]:
    spikes = []
    for dimension in DIMENSIONS:
        for value, per_day in daily_failures(rows, dimension).items():
            today = per_day.get(report_day, 0)
            if today < min_count:
                continue
            trailing = [per_day.get(report_day - timedelta(days=d), 0) for d in range(1, window + 1)]
            mean = sum(trailing) / window
            if today > factor * mean:
                spikes.append(Spike(dimension, value, report_day, today, mean))
    return sorted(spikes, key=lambda s: (-s.count, s.dimension, s.value))


def summarize(rows: list[Mapping[str, Any]], report_day: date) -> dict[str, Any]:
    def totals(dimension: str, only_today: bool) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for row in rows:
            if not only_today or row["day"] == report_day:
                out[str(row[dimension])] += int(row["failures"])
        return dict(sorted(((k, v) for k, v in out.items() if v), key=lambda kv: -kv[1]))

    today = [r for r in rows if r["day"] == report_day]
    return {
        "day": report_day.isoformat(),
        "failures_today": sum(int(r["failures"]) for r in today),
        "retries_today": sum(int(r["retries"]) for r in today),
        "successes_today": sum(int(r["successes"]) for r in today),
        "failures_in_window": sum(int(r["failures"]) for r in rows),
        "by_class_today": totals("error_class", True),
        "by_system_today": totals("system", True),
        "by_dag_today": totals("dag_id", True),
        "by_class_window": totals("error_class", False),
    }


def render_chart(rows: list[Mapping[str, Any]], report_day: date, window: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [report_day - timedelta(days=d) for d in range(window, -1, -1)]
    series = daily_failures(rows, "error_class")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    bottom = [0] * len(days)
    for klass in sorted(series):
        counts = [series[klass].get(d, 0) for d in days]
        ax.bar([d.isoformat()[5:] for d in days], counts, bottom=bottom, label=klass)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.set_title(f"Task failures by class, {days[0]} to {report_day}")
    ax.set_ylabel("failures")
    if series:
        ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render_markdown(summary: Mapping[str, Any], spikes: list[Spike], chart_name: str) -> str:
    def table(title: str, counts: Mapping[str, int]) -> list[str]:
        lines = [f"### {title}", "", "| value | failures |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in counts.items()] or ["| (none) | 0 |"]
        return [*lines, ""]

    lines = [
        f"# Error analysis for {summary['day']}", "",
        f"- failures: **{summary['failures_today']}** (retries {summary['retries_today']}, "
        f"successful tries {summary['successes_today']})",
        f"- failures in the window: {summary['failures_in_window']}", "",
        "## Spikes", "",
    ]
    lines += [f"- {s.describe()}" for s in spikes] or ["- none"]
    lines += ["", f"![failures by class]({chart_name})", "", "## Today", ""]
    lines += table("By class", summary["by_class_today"])
    lines += table("By system", summary["by_system_today"])
    lines += table("By DAG", summary["by_dag_today"])
    return "\n".join(lines)


def write_report(rows: list[Mapping[str, Any]], report_day: date, window: int, out_dir: Path,
                 factor: float = 2.0, min_count: int = 3) -> dict[str, Any]:
    """Write ``<out_dir>/<day>/error_analysis.md`` and ``failures.png``; returns the summary."""
    target = out_dir / report_day.isoformat()
    target.mkdir(parents=True, exist_ok=True)
    spikes = find_spikes(rows, report_day, window, factor, min_count)
    summary = summarize(rows, report_day)
    chart = render_chart(rows, report_day, window, target / "failures.png")
    report = target / "error_analysis.md"
    report.write_text(render_markdown(summary, spikes, chart.name), encoding="utf-8")
    return {**summary, "spikes": [s.describe() for s in spikes], "report": str(report), "chart": str(chart)}
