"""Fault scenarios against the real broker, database and service process (tests/faults/scenarios.py).

Each test runs one scenario at the CI size (``FAULTS_FULL=1``: the full size) and fails on any of
its checks, printing every check and figure. ``pytest -m faults`` selects them; bench/faults.py
runs them at full size and writes bench/results/faults.json.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults import scenarios
from tests.faults.harness import FaultStack
from tests.faults.scenarios import Sizes

SCENARIO_TIMEOUT_S = 1200 if os.environ.get("FAULTS_FULL") == "1" else 240
CLEAN_UP_S = 120
"""Beyond the scenario's own limit: its clean-up (service stopped, broker or database back) before pytest's."""


@pytest.mark.timeout(SCENARIO_TIMEOUT_S + CLEAN_UP_S)
@pytest.mark.parametrize("name", list(scenarios.SCENARIOS))
async def test_fault(name: str, fault_stack: FaultStack, sizes: Sizes, workdir: Path) -> None:
    outcome = await scenarios.run_scenario(name, fault_stack, sizes, workdir, SCENARIO_TIMEOUT_S)
    print(outcome.report())
    assert outcome.ok, outcome.report()
