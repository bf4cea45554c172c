"""A scenario cut short by its time limit leaves no service behind and says that it timed out.

A service left running stays subscribed on the fault stack's broker: every later scenario's messages then
reach two services, and each of their dead letters is counted twice.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.faults import scenarios
from tests.faults.harness import FaultStack, ServiceProcess
from tests.faults.scenarios import Outcome, Sizes


@pytest.mark.timeout(180)
async def test_a_scenario_over_its_time_limit_is_stopped_with_its_service(
    fault_stack: FaultStack, sizes: Sizes, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids: list[int] = []

    async def hangs(stack: FaultStack, sizes: Sizes, workdir: Path) -> Outcome:
        async with scenarios.scenario_run(stack, "hangs", workdir) as run:
            pids.append(run.svc.pid)
            await asyncio.sleep(3600)  # a scenario waiting for something that never comes
        return run.out

    monkeypatch.setitem(scenarios.SCENARIOS, "hangs", hangs)
    outcome = await scenarios.run_scenario("hangs", fault_stack, sizes, workdir, timeout_s=45)
    assert pids, f"the service did not get ready within the limit\n{outcome.report()}"
    assert not outcome.ok
    failed = [c.name for c in outcome.failed()]
    assert failed == [scenarios.TIMED_OUT], outcome.report()  # its own clean-up stopped the service
    assert "cancelled after 45 s" in outcome.report()
    assert not [svc for svc in ServiceProcess.started if svc.running()]
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
