"""The heavy-import probe (tests/dags/_heavy_imports.py) starts as soon as the run's tests are known: it is
a separate interpreter (~6 s on two cores), so it runs beside the tests collected before it instead of
in front of the ones that wait for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dags._heavy_imports import HeavyImportsProbe

PROBE = pytest.StashKey[HeavyImportsProbe]()


def pytest_collection_finish(session: pytest.Session) -> None:
    wanted = any("heavy_imports" in getattr(item, "fixturenames", ()) for item in session.items)
    if wanted and not session.config.option.collectonly:
        session.config.stash[PROBE] = HeavyImportsProbe()


def pytest_sessionfinish(session: pytest.Session) -> None:
    probe = session.config.stash.get(PROBE, None)
    if probe is not None:
        probe.close()


@pytest.fixture(scope="module")
def heavy_imports(request: pytest.FixtureRequest) -> dict[Path, object]:
    """The heavy modules each DAG file imports at top level (or why importing it failed)."""
    return request.config.stash[PROBE].results()
