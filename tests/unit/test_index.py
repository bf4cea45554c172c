"""Membership, hysteresis and gate crossing on the real Santos and Callao fences."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences import (
    Fence,
    FenceIndex,
    FenceKind,
    LocalProjection,
    Transition,
    TransitionKind,
    classify,
    distance_m,
    load_port,
)

SANTOS = load_port("santos")
CALLAO = load_port("callao")
TERMINAL = SANTOS.by_id("santos-terminal-34")  # Santos Brasil, the big container terminal
T0 = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Fix:
    ts: datetime
    lon: float
    lat: float


def run(index: FenceIndex, fixes: Iterable[Fix]) -> list[tuple[datetime, Transition]]:
    """What a device's state machine does per ping: hysteresis membership, crossings, classification."""
    events: list[tuple[datetime, Transition]] = []
    members: frozenset[str] = frozenset()
    prev: Fix | None = None
    for fix in fixes:
        new = index.membership(fix.lon, fix.lat, members)
        crossed: tuple[str, ...] = ()
        if prev is not None:
            crossed = index.crossed(prev.lon, prev.lat, fix.lon, fix.lat, exclude=members | new)
        events += [(fix.ts, t) for t in classify(members, new, crossed)]
        members, prev = new, fix
    return events


def offset(lon: float, lat: float, east_m: float, north_m: float) -> tuple[float, float]:
    a, b = LocalProjection(lon, lat).to_lonlat(east_m, north_m)
    return float(a), float(b)


def boundary_crossing(fence: Fence) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """A point well inside, the boundary point due east of it, and a point well outside beyond that."""
    inside = fence.geometry.representative_point()
    far = shapely.Point(offset(inside.x, inside.y, 5000.0, 0.0))
    ray = shapely.LineString([inside, far])
    hit = shapely.intersection(ray, fence.geometry.boundary)
    pts = sorted(shapely.get_coordinates(hit).tolist(), key=lambda c: c[0])
    edge = (pts[0][0], pts[0][1])
    outside = offset(*edge, 300.0, 0.0)
    return (inside.x, inside.y), edge, outside


@pytest.fixture(scope="module")
def santos_index() -> FenceIndex:
    return FenceIndex(SANTOS.fences)


def test_basic_container_protocol() -> None:
    index = FenceIndex([*SANTOS.fences, *CALLAO.fences])
    assert len(index) == len(SANTOS.fences) + len(CALLAO.fences)
    assert TERMINAL.id in index
    assert "nope" not in index
    assert index.get(TERMINAL.id) is TERMINAL
    assert index.fences[0] is SANTOS.fences[0]
    with pytest.raises(ValueError, match="duplicate fence id"):
        FenceIndex([*SANTOS.fences, SANTOS.fences[0]])


def test_fences_at_batch_includes_boundary_points(santos_index: FenceIndex) -> None:
    inside, _, _ = boundary_crossing(TERMINAL)
    edge = shapely.get_coordinates(TERMINAL.geometry)[0]  # a vertex lies exactly on the boundary
    lons = np.array([inside[0], edge[0], 0.0])
    lats = np.array([inside[1], edge[1], 0.0])
    got = santos_index.fences_at(lons, lats)
    assert TERMINAL.id in got[0]
    assert "santos-port-boundary-1" in got[0]
    assert TERMINAL.id in got[1]
    assert got[2] == frozenset()


def test_membership_batch_matches_single(santos_index: FenceIndex) -> None:
    inside, edge, outside = boundary_crossing(TERMINAL)
    near_out = offset(*edge, 10.0, 0.0)
    pts = [inside, near_out, outside, near_out]
    prev = [frozenset(), frozenset({TERMINAL.id}), frozenset({TERMINAL.id}), frozenset()]
    batch = santos_index.membership_batch([p[0] for p in pts], [p[1] for p in pts], prev)
    single = [santos_index.membership(p[0], p[1], q) for p, q in zip(pts, prev, strict=True)]
    assert batch == single
    assert TERMINAL.id in batch[1]  # 10 m out but was inside: still inside
    assert TERMINAL.id not in batch[2]  # 300 m out: left
    assert TERMINAL.id not in batch[3]  # 10 m out and was outside: not entered
    with pytest.raises(ValueError, match="previous memberships"):
        santos_index.membership_batch([0.0], [0.0], [])


def test_unknown_previous_ids_are_dropped(santos_index: FenceIndex) -> None:
    inside, _, _ = boundary_crossing(TERMINAL)
    assert "removed-fence" not in santos_index.membership(*inside, frozenset({"removed-fence"}))


def test_drive_in_dwell_and_out_gives_one_enter_one_exit(santos_index: FenceIndex) -> None:
    inside, edge, outside = boundary_crossing(TERMINAL)
    path = [
        outside,
        offset(*edge, 60.0, 0.0),
        offset(*edge, -40.0, 0.0),
        inside,
        inside,
        offset(*edge, -40.0, 0.0),
        offset(*edge, 60.0, 0.0),
        outside,
    ]
    fixes = [Fix(T0 + timedelta(seconds=30 * i), lon, lat) for i, (lon, lat) in enumerate(path)]
    events = [(ts, t) for ts, t in run(santos_index, fixes) if t.fence_id == TERMINAL.id]
    assert [t.kind for _, t in events] == [TransitionKind.ENTER, TransitionKind.EXIT]
    assert events[0][0] == fixes[2].ts
    assert events[1][0] == fixes[6].ts


def test_gps_noise_on_boundary_gives_one_enter_and_no_exit() -> None:
    index = FenceIndex([TERMINAL], hysteresis_m=25.0)
    _, edge, _ = boundary_crossing(TERMINAL)
    rng = random.Random(20240304)
    start = offset(*edge, 200.0, 0.0)
    fixes = [Fix(T0, *start)]
    for i in range(300):
        r = 15.0 * math.sqrt(rng.random())
        a = rng.uniform(0, 2 * math.pi)
        fixes.append(Fix(T0 + timedelta(seconds=10 * (i + 1)), *offset(*edge, r * math.cos(a), r * math.sin(a))))
    raw = index.fences_at(np.array([f.lon for f in fixes]), np.array([f.lat for f in fixes]))
    raw_flips = sum(1 for a, b in itertools.pairwise(raw) if a != b)
    assert raw_flips > 50  # without hysteresis this would be an alert storm
    events = run(index, fixes)
    assert [t for _, t in events] == [Transition(TransitionKind.ENTER, TERMINAL.id)]


def test_parked_deep_inside_fires_nothing(santos_index: FenceIndex) -> None:
    # a spot inside the terminal more than 60 m from every fence edge in the set
    minx, miny, maxx, maxy = TERMINAL.geometry.bounds
    spot = None
    for fx in np.linspace(0.05, 0.95, 19):
        for fy in np.linspace(0.05, 0.95, 19):
            lon, lat = minx + fx * (maxx - minx), miny + fy * (maxy - miny)
            if TERMINAL.geometry.contains(shapely.Point(lon, lat)) and all(
                distance_m(f.geometry.boundary, lon, lat) > 60.0 for f in SANTOS.fences
            ):
                spot = (lon, lat)
                break
        if spot:
            break
    assert spot is not None
    rng = random.Random(7)
    fixes = [Fix(T0 + timedelta(minutes=i), *offset(*spot, rng.gauss(0, 8), rng.gauss(0, 8))) for i in range(200)]
    events = run(santos_index, fixes)
    first_ts = {ts for ts, _ in events}
    assert first_ts == {fixes[0].ts}  # only the initial enters, then silence
    assert {t.kind for _, t in events} == {TransitionKind.ENTER}


def test_nothing_fires_far_outside_the_port(santos_index: FenceIndex) -> None:
    fixes = [Fix(T0 + timedelta(seconds=i), -46.60 + i * 1e-4, -23.60) for i in range(50)]
    assert run(santos_index, fixes) == []


def test_sparse_fixes_jumping_over_a_gate_yield_cross() -> None:
    gate = CALLAO.by_id("callao-gate-dpw-2")
    index = FenceIndex(CALLAO.fences)
    c = gate.geometry.centroid
    a = offset(c.x, c.y, -60.0, -40.0)
    b = offset(c.x, c.y, 60.0, 40.0)
    m0 = index.membership(*a, frozenset())
    m1 = index.membership(*b, m0)
    assert gate.id not in m0 | m1
    crossed = index.crossed(*a, *b, exclude=m0 | m1)
    assert gate.id in crossed
    assert Transition(TransitionKind.CROSS, gate.id) in classify(m0, m1, crossed)
    assert index.crossed(*a, *a) == ()


def test_crossed_is_ordered_along_the_segment() -> None:
    lon0, lat0 = -46.30, -23.95
    gates = []
    for i, east in enumerate([300.0, 100.0, 200.0]):
        (a, b), (c, d) = offset(lon0, lat0, east - 10, -10), offset(lon0, lat0, east + 10, 10)
        gates.append(Fence(f"g{i}", f"gate {i}", FenceKind.GATE, "test", shapely.box(a, b, c, d)))
    index = FenceIndex(gates)
    west, east_end = offset(lon0, lat0, 0, 0), offset(lon0, lat0, 400, 0)
    assert index.crossed(*west, *east_end) == ("g1", "g2", "g0")
    assert index.crossed(*east_end, *west) == ("g0", "g2", "g1")
    assert index.crossed(*west, *east_end, exclude=frozenset({"g2"})) == ("g1", "g0")
    assert FenceIndex([]).crossed(*west, *east_end) == ()


def _square_fences() -> list[Fence]:
    lon0, lat0 = -46.30, -23.95
    out = []
    for i, (e, n, half) in enumerate([(0, 0, 100), (150, 0, 60), (60, 80, 20)]):
        (minx, miny), (maxx, maxy) = offset(lon0, lat0, e - half, n - half), offset(lon0, lat0, e + half, n + half)
        out.append(Fence(f"sq-{i}", f"square {i}", FenceKind.TERMINAL, "test", shapely.box(minx, miny, maxx, maxy)))
    return out


PROPERTY_INDEX = FenceIndex(_square_fences())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(-350, 350), st.floats(-350, 350)), min_size=1, max_size=40))
def test_enter_exit_alternate_per_fence(steps: list[tuple[float, float]]) -> None:
    fixes = [Fix(T0, *offset(-46.30, -23.95, -2000.0, 0.0))]  # start outside everything
    fixes += [Fix(T0 + timedelta(seconds=i + 1), *offset(-46.30, -23.95, e, n)) for i, (e, n) in enumerate(steps)]
    seen: dict[str, list[TransitionKind]] = {}
    for _, t in run(PROPERTY_INDEX, fixes):
        if t.kind in (TransitionKind.ENTER, TransitionKind.EXIT):
            seen.setdefault(t.fence_id, []).append(t.kind)
    for kinds in seen.values():
        expected = [TransitionKind.ENTER, TransitionKind.EXIT] * len(kinds)
        assert kinds == expected[: len(kinds)]
