"""Fault scenarios against the real broker, database and service process (tests/faults/scenarios.py).

Each test runs one scenario at the CI size and fails on any of its checks, printing every check
and figure. ``pytest -m faults`` selects them; bench/faults.py runs them at full size.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import scenarios
from tests.faults.harness import FaultStack
from tests.faults.scenarios import Sizes


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", list(scenarios.SCENARIOS))
async def test_fault(name: str, fault_stack: FaultStack, sizes: Sizes, workdir: Path) -> None:
    outcome = await scenarios.SCENARIOS[name](fault_stack, sizes, workdir)
    print(outcome.report())
    assert outcome.ok, outcome.report()
