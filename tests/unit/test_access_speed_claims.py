"""The access window's stop rule against a tracker that reports road speed while it stands."""

from __future__ import annotations

from tests.unit.test_inspection import ROAD_MID, VACANT, cleared_at_inspection


def test_standing_in_a_vacant_lot_for_20_minutes_reporting_road_speed_is_still_a_stop() -> None:
    # the position says the box has not moved for 20 minutes (fixes within 3 m of each other); only the speed field,
    # which the tracker (or whoever holds it) writes, says 8 m/s. Taken at its word, every such fix would be "no
    # evidence of standing" and the stop rule would never fire
    trip = cleared_at_inspection()
    trip.drive(10, [ROAD_MID])
    for s in range(20, 20 + 1200, 10):
        trip.fix(s, VACANT[0] if s % 20 else (VACANT[0][0] + 0.00002, VACANT[0][1]), speed=8.0)
    stops = trip.alerts("stop")
    assert stops, f"no stop alert; alerts raised: {[a.evidence['reason'] for _, a in trip.alerts()]}"
    assert stops[0][0] <= 20 + 300
