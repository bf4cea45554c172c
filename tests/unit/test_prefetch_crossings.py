"""Pipeline.prefetch with the devices' previous fixes: every hop's fences computed for the batch, same answers."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import pytest

from geofences import FenceIndex, load_port
from tracker.config import Settings
from tracker.core.model import DeviceKind, Ping
from tracker.core.pipeline import Pipeline, StepResult
from tracker.core.state import DeviceState
from tracker.sim.scenario import SimConfig, generate

SCENARIO = generate(SimConfig(trucks=8, hours=0.75, anomaly_share=0.5, seed=5))
PINGS = SCENARIO.pings


def replay(pings: Sequence[Ping], batch: int | None) -> tuple[list[StepResult], int, int]:
    """Step every ping in order; with ``batch``, prefetch each run of ``batch`` pings with the states' last fixes.

    Also counts the hops the batch had computed ahead, and all hops that had a previous fix."""
    index = FenceIndex(load_port("santos").fences, entry_margin_m=Settings().entry_margin_m)
    pipeline = Pipeline(index)
    every = frozenset(f.id for f in index.fences)  # an exclusion that covers any assumed ahead
    states: dict[str, DeviceState] = {}
    out: list[StepResult] = []
    ahead = hops = 0
    for i, ping in enumerate(pings):
        if batch is not None and i % batch == 0:
            pipeline.prefetch(pings[i : i + batch], {d: s.last for d, s in states.items()})
        state = states.get(ping.device_id) or DeviceState(
            ping.device_id, SCENARIO.devices.get(ping.device_id, DeviceKind.TRUCK)
        )
        if state.last is not None and (state.last.lon, state.last.lat) != (ping.lon, ping.lat):
            hops += 1
            ahead += index.met(state.last.lon, state.last.lat, ping.lon, ping.lat, every) is not None
        result = pipeline.step(state, ping)
        states[ping.device_id] = result.state
        out.append(result)
    return out, ahead, hops


@cache
def plain() -> tuple[list[StepResult], int, int]:
    return replay(PINGS, None)


def test_the_scenario_raises_crossings() -> None:
    results, _, _ = plain()
    kinds = [getattr(a, "kind", None) for r in results for a in r.alerts]
    assert kinds.count("geofence_cross") >= 10  # the comparison below covers crossings, not only their absence


@pytest.mark.parametrize("batch", [1, 13, 400])
def test_prefetched_crossings_give_the_same_results(batch: int) -> None:
    alone, ahead0, hops = plain()
    got, ahead, _ = replay(PINGS, batch)
    assert got == alone
    assert ahead0 == 0
    assert ahead >= 0.8 * hops  # most hops were answered from the batch (the rest: gaps, rejected fixes)


def test_a_stale_prefetch_is_only_a_miss() -> None:
    """Hops prefetched from a wrong idea of the previous fix (another batch's) are never asked for."""
    index = FenceIndex(load_port("santos").fences)
    pipeline = Pipeline(index)
    pipeline.prefetch(PINGS[100:200], {p.device_id: None for p in PINGS})
    states: dict[str, DeviceState] = {}
    plain = Pipeline(FenceIndex(load_port("santos").fences))
    plain_states: dict[str, DeviceState] = {}
    for ping in PINGS[:300]:
        for pl, st in ((pipeline, states), (plain, plain_states)):
            state = st.get(ping.device_id) or DeviceState(ping.device_id, DeviceKind.TRUCK)
            st[ping.device_id] = pl.step(state, ping).state
    assert states == plain_states


def test_measured_hops_match_the_one_hop_measurement() -> None:
    """The batch measures each crossing's part inside exactly as the one-hop path does (same floats)."""
    import math

    import numpy as np
    import shapely

    from geofences import EARTH_RADIUS_M

    index = FenceIndex(load_port("santos").fences, entry_margin_m=Settings().entry_margin_m)
    last: dict[str, Ping] = {}
    hops = []
    for ping in PINGS:
        prev = last.get(ping.device_id)
        if prev is not None and (prev.lon, prev.lat) != (ping.lon, ping.lat):
            hops.append((prev.lon, prev.lat, ping.lon, ping.lat))
        last[ping.device_id] = ping
    hops = list(dict.fromkeys(hops))
    index.prefetch_crossings([h[0] for h in hops], [h[1] for h in hops], [h[2] for h in hops], [h[3] for h in hops])
    measured = 0
    ky = math.radians(1.0) * EARTH_RADIUS_M
    for lon0, lat0, lon1, lat1 in hops:
        got = index.met_measured(lon0, lat0, lon1, lat1)
        assert got is not None
        assert [(f, g) for f, g, _ in got] == list(index.met(lon0, lat0, lon1, lat1) or ())
        if not got:
            continue
        insides = np.empty(len(got), dtype=object)
        insides[:] = [g for _, g, _ in got]
        origin, scale = np.array([lon0, lat0]), np.array([ky * math.cos(math.radians(lat0)), ky])
        one = shapely.length(shapely.transform(insides, lambda c, o=origin, s=scale: (c - o) * s)).tolist()
        assert [m for _, _, m in got] == one
        measured += len(got)
    assert measured >= 50
