"""A fence reload rebuilds the pipeline over a new index and loses nothing it knew about the devices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from geofences import FenceIndex, load_port
from tracker.core.model import DeviceKind, Ping
from tracker.core.pipeline import Params, Pipeline
from tracker.core.state import DeviceState

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
LON, LAT = -46.30, -23.98  # open water near Santos: inside no fence of either index


def test_a_rebuilt_pipeline_keeps_the_world_the_hauls_and_its_parameters() -> None:
    params = Params()
    old = Pipeline(FenceIndex([]), params)
    box = old.pair(DeviceState("BOX-1", DeviceKind.CONTAINER), "TRK-1", T0).state
    box = old.step(box, Ping("BOX-1", T0, LON, LAT)).state
    truck = old.step(DeviceState("TRK-1"), Ping("TRK-1", T0, LON, LAT)).state
    before = old.world.get("TRK-1")
    assert before is not None and before.paired_with == "BOX-1"

    new = old.with_index(FenceIndex(load_port("santos").fences))
    assert new.index is not old.index
    assert new.params is params and new.detectors == old.detectors
    assert {p.device_id for p in new.world} == {"BOX-1", "TRK-1"}
    # the truck's next fix still knows which container it hauls (the map lives in the pipeline, not the state)
    new.step(truck, Ping("TRK-1", T0 + timedelta(seconds=5), LON + 0.0001, LAT))
    after = new.world.get("TRK-1")
    assert after is not None and after.paired_with == "BOX-1"


def test_a_fresh_pipeline_over_the_same_world_would_have_forgotten_the_haul() -> None:
    """What reloads did before ``with_index``: the truck's partner is lost, which the test above guards."""
    old = Pipeline(FenceIndex([]))
    box = old.pair(DeviceState("BOX-1", DeviceKind.CONTAINER), "TRK-1", T0).state
    old.step(box, Ping("BOX-1", T0, LON, LAT))
    truck = old.step(DeviceState("TRK-1"), Ping("TRK-1", T0, LON, LAT)).state
    fresh = Pipeline(FenceIndex([]), Params(), world=old.world)
    fresh.step(truck, Ping("TRK-1", T0 + timedelta(seconds=5), LON + 0.0001, LAT))
    after = fresh.world.get("TRK-1")
    assert after is not None and after.paired_with is None
