"""A container crawling beside a restricted lot, then silent: the restricted-fence clearance of the halting grace."""

from __future__ import annotations

from geofences import FenceKind
from tests.unit.detector_helpers import SANTOS, Runner, at, offset
from tests.unit.test_dark import TICK, alerts, driving, ticks
from tracker.core.dark import DarkDetector
from tracker.core.model import DeviceKind

BESIDE_RESTRICTED = (-46.34165, -23.925069)  # santos-terminal-26, 40 m from santos-restricted-08


def test_a_container_crawling_beside_a_restricted_lot_then_jammed_raises_at_the_moving_limit() -> None:
    # the insider's trick of test_dark's slowing-once-then-jamming case, with a box instead of a truck: one fix at
    # a crawl (3 m/s, below yard_speed_ms) 40 m from a restricted lot, then the jammer. The container's yard rule
    # asks ``_may_halt`` too, so the parked limit (15 min) is denied there
    r = Runner(DarkDetector(), kind=DeviceKind.CONTAINER, device_id="CONT-1")
    r.run(driving(BESIDE_RESTRICTED, range(0, 300, 10)), tick_every=TICK)
    r.fix(301, *offset(BESIDE_RESTRICTED, 0, 0), speed=3.0)
    assert any(SANTOS.get(f).kind is FenceKind.TERMINAL for f in r.fences)
    lost = alerts(ticks(r, 303, 301 + 600), "signal_lost")
    assert len(lost) == 1, "a box silent for 10 minutes 40 m from a restricted lot was never reported lost"
    assert lost[0].ts == at(301 + 120)
