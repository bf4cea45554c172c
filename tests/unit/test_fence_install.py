"""Putting a new fence index in force keeps every device's state, minus memberships of deleted fences."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from geofences import FenceIndex, load_fence_set
from tracker.config import Settings
from tracker.core.model import Ping
from tracker.core.pipeline import Params, Pipeline
from tracker.core.state import DeviceState
from tracker.service import Fences, Service

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def square(fence_id: str, x: float, kind: str = "restricted") -> dict[str, Any]:
    ring = [[x, 10.0], [x + 0.01, 10.0], [x + 0.01, 10.01], [x, 10.01], [x, 10.0]]
    return {
        "type": "Feature",
        "properties": {"id": fence_id, "kind": kind},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def fence_set(*features: dict[str, Any]) -> Any:
    return load_fence_set({"type": "FeatureCollection", "port": "x", "features": list(features)})


def inside_r1(pipeline: Pipeline) -> DeviceState:
    state = DeviceState("T1")
    for i in range(3):  # a restricted entry is confirmed by a second fix inside
        state = pipeline.step(state, Ping("T1", T0 + timedelta(seconds=10 * i), 10.005, 10.005 + i * 1e-5)).state
    assert state.fences == {"r1"}
    return state


def test_the_core_alone_cannot_judge_a_device_inside_a_fence_that_is_gone() -> None:
    """Why the service drops such memberships: the core looks every member fence up in the index."""
    old = Pipeline(FenceIndex(fence_set(square("r1", 10.0)).fences), Params())
    state = inside_r1(old)
    with pytest.raises(KeyError):
        old.with_index(FenceIndex([])).step(state, Ping("T1", T0 + timedelta(seconds=60), 10.005, 10.006))


def test_installing_a_set_without_the_fence_drops_it_and_keeps_the_rest() -> None:
    async def run() -> None:
        svc = Service(Settings())
        both = fence_set(square("r1", 10.0), square("p1", 10.05, "authorized_parking"))
        svc._install(Fences.build([both], 25.0, 10.0))
        svc.states["T1"] = before = inside_r1(svc.pipeline)
        world = svc.pipeline.world
        svc._install(Fences.build([fence_set(square("p1", 10.05, "authorized_parking"))], 25.0, 10.0))
        after = svc.states["T1"]
        assert after.fences == frozenset() and before.fences == {"r1"}  # the old state is not changed
        assert after.last == before.last and after.motion == before.motion
        assert svc.pipeline.world is world  # the world view survives the swap
        result = svc.pipeline.step(after, Ping("T1", T0 + timedelta(seconds=60), 10.005, 10.006))
        assert result.alerts == ()  # no exit from a fence that no longer exists
        assert result.state.fences == frozenset()

    asyncio.run(run())
