"""The segment walk never hides a crossing: wherever shapely finds a fence on the way, the walk lists it."""

from __future__ import annotations

import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.detector_helpers import OPEN, RESTRICTED, SANTOS, TERMINAL, offset

PLACES = [OPEN, TERMINAL, RESTRICTED, (-46.3047, -23.9812), (-46.2960, -23.9700)]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(PLACES),
    st.floats(-600.0, 600.0),
    st.floats(-600.0, 600.0),
    st.floats(-600.0, 600.0),
    st.floats(-600.0, 600.0),
    st.booleans(),
)
def test_the_walk_lists_every_fence_a_segment_meets(
    place: tuple[float, float], e0: float, n0: float, e1: float, n1: float, exclude_own: bool
) -> None:
    lon0, lat0 = offset(place, e0, n0)
    lon1, lat1 = offset(place, e1, n1)
    assert _agrees(lon0, lat0, lon1, lat1, exclude_own) is not False


def _agrees(lon0: float, lat0: float, lon1: float, lat1: float, exclude_own: bool) -> bool | None:
    """None when the segment meets nothing to check; else whether the walk listed all it meets."""
    own = SANTOS.fences_at([lon0, lon1], [lat0, lat1])
    exclude = own[0] | own[1] if exclude_own else frozenset()
    met = {f for f, _ in SANTOS.crossings(lon0, lat0, lon1, lat1, exclude, among=[f.id for f in SANTOS.fences])}
    if not met:
        return None
    return met <= set(SANTOS.near_segment(lon0, lat0, lon1, lat1))


def test_a_sweep_of_hops_over_the_port_loses_no_crossing() -> None:
    verdicts = []
    for place in PLACES:
        for k in range(200):
            e, n = (k * 37) % 400 - 200.0, (k * 53) % 400 - 200.0
            lon0, lat0 = offset(place, e, n)
            lon1, lat1 = offset(place, e + 60.0 * ((k % 5) - 2), n + 45.0 * ((k % 7) - 3))
            verdicts.append(_agrees(lon0, lat0, lon1, lat1, exclude_own=True))
    checked = [v for v in verdicts if v is not None]
    assert len(checked) >= 50 and all(checked)
    assert verdicts.count(None) >= 100  # most hops meet no fence beyond their own


def test_a_short_hop_inside_the_fences_it_is_in_lists_only_those() -> None:
    lon0, lat0 = offset(TERMINAL, 0, 0)
    lon1, lat1 = offset(TERMINAL, 8, 3)
    own = SANTOS.fences_at([lon0, lon1], [lat0, lat1])
    assert own[0] == own[1] and own[0]
    near = set(SANTOS.near_segment(lon0, lat0, lon1, lat1))
    assert near == own[0]  # nothing else has an edge within a cell of the hop
    seg = shapely.LineString([(lon0, lat0), (lon1, lat1)])
    assert all(shapely.intersects(seg, SANTOS.get(f).geometry) for f in near)
