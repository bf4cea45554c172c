"""Pipeline.prefetch: raw fence membership for a whole micro-batch, computed ahead, changes no answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences import FenceIndex, load_port
from tracker.config import Settings
from tracker.core.model import DeviceKind, Ping
from tracker.core.pipeline import Pipeline, StepResult
from tracker.core.state import DeviceState
from tracker.sim.scenario import SimConfig, generate

SANTOS = FenceIndex(load_port("santos").fences, entry_margin_m=Settings().entry_margin_m)
SCENARIO = generate(SimConfig(trucks=6, hours=0.75, anomaly_share=0.5, seed=3))
PINGS = SCENARIO.pings


def replay(pings: Sequence[Ping], batch: int | None) -> list[StepResult]:
    """Step every ping in order; with ``batch``, prefetch each run of ``batch`` pings first."""
    pipeline = Pipeline(SANTOS)
    states: dict[str, DeviceState] = {}
    out: list[StepResult] = []
    for i, ping in enumerate(pings):
        if batch is not None and i % batch == 0:
            pipeline.prefetch(pings[i : i + batch])
        state = states.get(ping.device_id) or DeviceState(
            ping.device_id, SCENARIO.devices.get(ping.device_id, DeviceKind.TRUCK)
        )
        result = pipeline.step(state, ping)
        states[ping.device_id] = result.state
        out.append(result)
    return out


def test_the_scenario_crosses_fences() -> None:
    fences = [r.state.fences for r in replay(PINGS, None)]
    assert len(PINGS) > 500
    assert len(set(fences)) > 10  # devices move between many memberships: the comparison below means something


@pytest.mark.parametrize("batch", [1, 7, 500])
def test_prefetch_gives_the_same_results_as_stepping_alone(batch: int) -> None:
    assert replay(PINGS, batch) == replay(PINGS, None)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, len(PINGS) - 60), st.integers(1, 60))
def test_prefetching_other_pings_changes_nothing(start: int, size: int) -> None:
    """A prefetch that covers other fixes than those stepped (stale, partial) is only a cache miss."""
    pings = PINGS[start : start + 60]
    pipeline = Pipeline(SANTOS)
    pipeline.prefetch(PINGS[max(0, start - size) : start + size // 2])
    plain = Pipeline(SANTOS)
    states: dict[str, DeviceState] = {}
    plain_states: dict[str, DeviceState] = {}
    for ping in pings:
        st0 = states.get(ping.device_id) or DeviceState(ping.device_id, DeviceKind.TRUCK)
        st1 = plain_states.get(ping.device_id) or DeviceState(ping.device_id, DeviceKind.TRUCK)
        a, b = pipeline.step(st0, ping), plain.step(st1, ping)
        assert a == b
        states[ping.device_id], plain_states[ping.device_id] = a.state, b.state


def test_prefetched_fixes_are_not_looked_up_again(monkeypatch: pytest.MonkeyPatch) -> None:
    index = FenceIndex(load_port("santos").fences)
    pipeline = Pipeline(index, detectors=())
    pings = PINGS[:200]
    pipeline.prefetch(pings)

    def fail(x: float, y: float) -> list[int]:
        raise AssertionError(f"looked up {x}, {y} again")

    monkeypatch.setattr(index._cells, "hits_one", fail)
    states: dict[str, DeviceState] = {}
    for ping in pings:
        result = pipeline.step(states.get(ping.device_id) or DeviceState(ping.device_id, DeviceKind.TRUCK), ping)
        states[ping.device_id] = result.state
    assert any(s.fences for s in states.values())


def test_a_prefetch_for_another_index_is_ignored() -> None:
    pipeline = Pipeline(SANTOS, detectors=())
    ping = next(p for p in PINGS if SANTOS.fences_at([p.lon], [p.lat])[0])
    pipeline.prefetch([ping])
    pipeline.index = FenceIndex([])  # a reloaded, empty fence set
    result = pipeline.step(DeviceState(ping.device_id, DeviceKind.TRUCK), ping)
    assert result.state.fences == frozenset()
    pipeline.prefetch([])
    assert pipeline.step(DeviceState(ping.device_id, DeviceKind.TRUCK), ping).state.fences == frozenset()


class _Counting(FenceIndex):
    """Counts the points asked of the raw lookup (what ``prefetch`` keeps across batches is not asked again)."""

    asked = 0

    def fences_at(self, lons: Any, lats: Any) -> list[frozenset[str]]:
        self.asked += len(lons)
        return super().fences_at(lons, lats)


def test_points_of_earlier_batches_are_not_looked_up_again() -> None:
    index = _Counting(load_port("santos").fences, entry_margin_m=Settings().entry_margin_m)
    pipeline = Pipeline(index)
    states: dict[str, DeviceState] = {}
    plain = replay(PINGS, None)
    got: list[StepResult] = []
    starts = ahead = 0
    for i in range(0, len(PINGS), 20):
        batch = PINGS[i : i + 20]
        starts += sum(1 for p in batch if (st := states.get(p.device_id)) is not None and st.last is not None)
        before = index.asked
        pipeline.prefetch(batch, {d: s.last for d, s in states.items()})
        ahead += index.asked - before  # (detectors ask the index too, while stepping)
        for ping in batch:
            state = states.get(ping.device_id) or DeviceState(
                ping.device_id, SCENARIO.devices.get(ping.device_id, DeviceKind.TRUCK)
            )
            result = pipeline.step(state, ping)
            states[ping.device_id] = result.state
            got.append(result)
    assert got == plain
    # every fix is looked up once; the hops' start points, fixes of earlier batches, were found then
    assert ahead <= len({(p.lon, p.lat) for p in PINGS})
    assert starts > len(PINGS) // 2  # there were hop starts to find again
