"""Hostile-input tests: fuzz case budgets and the summary lines the report quotes.

``FIONA_FUZZ_EXAMPLES`` scales every fuzz test (default: a run of about a minute per file);
e.g. ``FIONA_FUZZ_EXAMPLES=2000 pytest tests/hostile`` for a long run.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from tests.hostile.flow import FlowRun

EXAMPLES = int(os.environ.get("FIONA_FUZZ_EXAMPLES", "0")) or None
FUZZ_CASES: Counter[str] = Counter()


def fuzz_settings(default_examples: int) -> settings:
    """Hypothesis settings: ``default_examples`` unless ``FIONA_FUZZ_EXAMPLES`` says otherwise."""
    return settings(
        max_examples=EXAMPLES or default_examples,
        deadline=None,
        # CI runs the same cases every time (a red run can be reproduced); a longer run asked
        # for with FIONA_FUZZ_EXAMPLES explores new ones.
        derandomize=not EXAMPLES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FUZZ_CASES:
        cases = ", ".join(f"{k}={v}" for k, v in sorted(FUZZ_CASES.items()))
        terminalreporter.write_line(f"FUZZ CASES RUN: {cases}")


@pytest.fixture(scope="session")
def flow_run(tmp_path_factory: pytest.TempPathFactory) -> FlowRun:
    """The end-to-end flow with planted identifiers, run once for the permission and log tests."""
    from tests.hostile.flow import run_flow

    return run_flow(tmp_path_factory.mktemp("flow"))
