"""The world view must answer "who is near here" exactly as a brute-force scan would."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences import LocalProjection, haversine_m
from tracker.core.model import DeviceKind
from tracker.core.world import Position, World

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SANTOS = LocalProjection(-46.31, -23.95)
CALLAO = LocalProjection(-77.14, -12.05)


def pos(device: str, proj: LocalProjection, x: float, y: float, seconds: float = 0.0) -> Position:
    lon, lat = proj.to_lonlat(x, y)
    return Position(device, DeviceKind.TRUCK, T0 + timedelta(seconds=seconds), float(lon), float(lat))


def brute(world: World, lon: float, lat: float, radius: float, exclude: str | None = None) -> list[str]:
    hits = [(haversine_m(lon, lat, p.lon, p.lat), p.device_id) for p in world if p.device_id != exclude]
    return [d for dist, d in sorted(hits) if dist <= radius]


coords = st.tuples(st.floats(-3000, 3000), st.floats(-3000, 3000))
ports = st.sampled_from([SANTOS, CALLAO])


@settings(max_examples=150, deadline=None)
@given(
    ports, st.lists(coords, min_size=0, max_size=120), coords, st.floats(0.0, 200.0), st.sampled_from([100.0, 250.0])
)
def test_near_is_exactly_the_brute_force_answer_at_detector_radii(
    proj: LocalProjection,
    devices: list[tuple[float, float]],
    query: tuple[float, float],
    radius: float,
    cell_m: float,
) -> None:
    world = World(cell_m=cell_m)
    for i, (x, y) in enumerate(devices):
        world.update(pos(f"D{i:03d}", proj, x, y))
    lon, lat = (float(v) for v in proj.to_lonlat(*query))
    got = world.near(lon, lat, radius)
    assert [p.device_id for _, p in got] == brute(world, lon, lat, radius)
    for dist, p in got:
        assert dist == pytest.approx(haversine_m(lon, lat, p.lon, p.lat))


@settings(max_examples=100, deadline=None)
@given(ports, st.lists(coords, min_size=1, max_size=120), coords, st.floats(0.0, 3000.0))
def test_near_never_returns_a_device_outside_the_radius_and_sorts_nearest_first(
    proj: LocalProjection, devices: list[tuple[float, float]], query: tuple[float, float], radius: float
) -> None:
    world = World()
    for i, (x, y) in enumerate(devices):
        world.update(pos(f"D{i:03d}", proj, x, y))
    lon, lat = (float(v) for v in proj.to_lonlat(*query))
    got = world.near(lon, lat, radius, exclude="D000")
    assert set(p.device_id for _, p in got) <= set(brute(world, lon, lat, radius, exclude="D000"))
    assert all(d <= radius for d, _ in got)
    assert [d for d, _ in got] == sorted(d for d, _ in got)
    assert "D000" not in {p.device_id for _, p in got}


@pytest.mark.parametrize("radius", [600.0, 900.0])
@pytest.mark.parametrize("proj", [SANTOS, CALLAO])
def test_radius_larger_than_the_cell_reaches_every_ring(proj: LocalProjection, radius: float) -> None:
    world = World(cell_m=250.0)
    expected: set[str] = set()
    for k in range(16):
        ang = 2 * math.pi * k / 16
        for frac in (0.3, 0.7, 0.98, 1.05):
            dev = f"R{k:02d}-{frac}"
            world.update(pos(dev, proj, frac * radius * math.cos(ang), frac * radius * math.sin(ang)))
            if frac < 1:
                expected.add(dev)
    lon, lat = (float(v) for v in proj.to_lonlat(0.0, 0.0))
    assert {p.device_id for _, p in world.near(lon, lat, radius)} == expected


def test_update_moves_a_device_between_cells() -> None:
    world = World(cell_m=250.0)
    world.update(pos("T1", SANTOS, 0, 0))
    world.update(pos("T2", SANTOS, 5, 5))
    world.update(pos("T1", SANTOS, 2000, -1500, seconds=60))
    lon0, lat0 = (float(v) for v in SANTOS.to_lonlat(0, 0))
    lon1, lat1 = (float(v) for v in SANTOS.to_lonlat(2000, -1500))
    assert [p.device_id for _, p in world.near(lon0, lat0, 30)] == ["T2"]
    moved = world.near(lon1, lat1, 30)
    assert [p.device_id for _, p in moved] == ["T1"]
    assert moved[0][1].ts == T0 + timedelta(seconds=60)
    assert len(world) == 2
    # the old cell keeps no trace of the device that left it
    assert sum(len(members) for cells in world._grids.values() for members in cells.values()) == 2


def test_update_within_a_cell_replaces_the_position() -> None:
    world = World()
    world.update(pos("T1", SANTOS, 0, 0))
    world.update(pos("T1", SANTOS, 3, 0, seconds=5))
    lon, lat = (float(v) for v in SANTOS.to_lonlat(3, 0))
    got = world.near(lon, lat, 1.0)
    assert len(got) == 1 and got[0][1].ts == T0 + timedelta(seconds=5)
    assert len(world) == 1


def test_remove_forgets_the_device_everywhere() -> None:
    world = World()
    world.update(pos("T1", SANTOS, 0, 0))
    world.update(pos("T2", SANTOS, 10, 0))
    world.remove("T1")
    world.remove("T1")  # twice, and unknown ids, are harmless
    world.remove("nobody")
    lon, lat = (float(v) for v in SANTOS.to_lonlat(0, 0))
    assert [p.device_id for _, p in world.near(lon, lat, 50)] == ["T2"]
    assert world.get("T1") is None
    assert len(world) == 1
    world.remove("T2")
    assert len(world) == 0 and all(not cells for cells in world._grids.values()) and world.near(lon, lat, 50) == []


def test_exclude_and_ties_are_deterministic() -> None:
    world = World()
    world.update(pos("B", SANTOS, 10, 0))
    world.update(pos("A", SANTOS, -10, 0))
    world.update(pos("ME", SANTOS, 0, 0))
    lon, lat = (float(v) for v in SANTOS.to_lonlat(0, 0))
    assert [p.device_id for _, p in world.near(lon, lat, 20, exclude="ME")] == ["A", "B"]


@pytest.mark.parametrize(
    ("query", "device", "radius"),
    [
        ((-46.32118832289969, -23.949936317659976), (-46.318901654956576, -23.950604744654214), 245.63842810996044),
    ],
)
def test_device_near_a_cell_edge_is_found(
    query: tuple[float, float], device: tuple[float, float], radius: float
) -> None:
    world = World(cell_m=250.0)
    world.update(Position("far", DeviceKind.TRUCK, T0, *device))
    assert haversine_m(*query, *device) <= radius
    assert [p.device_id for _, p in world.near(*query, radius)] == ["far"]


def test_a_kind_query_is_the_full_answer_filtered() -> None:
    """``kind=`` must give exactly the devices of that kind that the unfiltered query gives, in its order,
    including a device that changed kind (it leaves the other kind's grid)."""
    rng = random.Random(7)
    world = World()
    for i in range(300):
        kind = DeviceKind.TRUCK if i % 5 == 0 else DeviceKind.CONTAINER
        world.update(replace(pos(f"D{i:03d}", SANTOS, rng.uniform(-400, 400), rng.uniform(-400, 400)), kind=kind))
    world.update(replace(world.get("D001") or pos("D001", SANTOS, 0, 0), kind=DeviceKind.TRUCK))
    lon, lat = (float(v) for v in SANTOS.to_lonlat(0, 0))
    everyone = world.near(lon, lat, 350, exclude="D000")
    for kind in DeviceKind:
        assert world.near(lon, lat, 350, exclude="D000", kind=kind) == [e for e in everyone if e[1].kind is kind]
    trucks = {p.device_id for _, p in world.near(lon, lat, 600, kind=DeviceKind.TRUCK)}
    assert "D001" in trucks and "D001" not in {
        p.device_id for _, p in world.near(lon, lat, 600, kind=DeviceKind.CONTAINER)
    }
