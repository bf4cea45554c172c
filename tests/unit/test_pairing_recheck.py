"""Trackers in lock-step, judged in event-time order: a standing box's reading taken again on a tick.

A micro-batch is judged in event-time order, so a box fix taken a fraction of a second before its truck's is
compared with the truck's fix of one reporting interval earlier; the truck's own fix of that instant only lands
in the world view afterwards. Separation needs two readings that share no fix, and with five-minute trackers
two box fixes in a row can rest on the same stale truck fix (Callao edge-style benchmark, seed 3: a box dropped
while its truck drove 1.2 km off and back, never reported). The tick after such a fix compares the box with the
truck's fix taken seconds after it, the lag counted as position uncertainty, and that reading can only raise.
"""

from __future__ import annotations

from tests.unit.test_pairing import K, Sim, at
from tracker.core.model import Alert
from tracker.core.pairing import SEPARATED, PairingDetector


def lockstep(away_x: float, *, second_lag: float = 0.041, back: bool = True) -> Sim:
    """The box stands at the origin from 0 and reports every 300 s; the truck beside it reports in step, its fix
    0.4 s before or 41 ms after the box's. It stands 1.2 km off at its fixes of 599.6 and ``900 + second_lag``
    (``away_x``) and is back beside the box at 1199.6 when ``back``."""
    sim = Sim()
    sim.pair("CONT", "TRK", 0)
    for t in (0, 300):
        sim.fix("CONT", t, 0, 0)
        sim.fix("TRK", t + 0.041, 5, 0, K)
    sim.fix("TRK", 599.6, away_x, 0, K)  # taken before the box's fix: judged first
    sim.fix("CONT", 600, 0, 0)  # first reading: 1.2 km apart
    sim.fix("CONT", 900, 0, 0)  # judged before the truck's fix of 900.041: its reading rests on 599.6 again
    sim.fix("TRK", 900 + second_lag, away_x, 0, K)
    return sim


def finish(sim: Sim) -> Sim:
    sim.fix("TRK", 1199.6, 5, 0, K)  # back beside the box
    sim.fix("CONT", 1200, 0, 0)
    return sim


def test_a_box_judged_before_its_lockstep_trucks_fix_is_read_again_on_the_next_tick() -> None:
    sim = lockstep(1200)
    assert sim.alerts() == []  # two far readings, but both rest on the truck's fix of 599.6
    assert sim.tick("CONT", 931) != []  # the truck's fix of 900.041, 41 ms after the box's: a second reading
    (sep,) = sim.alerts(SEPARATED)
    assert sep.ts == at(900.041)  # when the evidence was complete, not when the tick ran
    assert sep.evidence["truck"]["fix"]["ts"] == at(900.041).isoformat()
    assert sep.evidence["first_reading"]["at"] == at(600).isoformat()
    assert sep.evidence["distance_m"] > 1100 and sep.evidence["uncertainty_m"] >= 1.0  # 41 ms at 25 m/s
    assert sim.tick("CONT", 961) == []  # read once
    finish(sim)
    assert len(sim.alerts(SEPARATED)) == 1


def test_the_tick_rereads_only_once_the_lag_bound_has_passed_and_only_once() -> None:
    sim = lockstep(1200)
    state = sim.devices["CONT"].state
    assert PairingDetector().params.recheck_lag_s == 5.0
    assert sim.tick("CONT", 904) == [] and sim.devices["CONT"].state == state  # before its due time: untouched
    assert sim.tick("CONT", 906) != []


def test_a_truck_fix_taken_longer_after_the_box_fix_is_not_compared_on_a_tick() -> None:
    """20 s after the box's last fix the box may already have been picked up: a parked tracker's silence proves
    nothing (see ``test_a_sparse_container_is_judged_on_its_own_fixes_not_on_ticks``)."""
    sim = lockstep(1200, second_lag=20.0)
    assert sim.tick("CONT", 931) == []
    finish(sim)
    assert sim.alerts() == []


def test_the_trucks_single_outlier_read_on_a_tick_raises_nothing() -> None:
    """The truck really stays beside the box; only its fix of 900.041 is a multipath jump 1.2 km off. The tick's
    reading of it is one far reading: the next box fix, compared with the truck's next fix, clears it."""
    sim = Sim()
    sim.pair("CONT", "TRK", 0)
    for t in (0, 300, 600, 900, 1200, 1500):
        sim.fix("CONT", t, 0, 0)
        sim.fix("TRK", t + 0.041, 1200 if t == 900 else 5, 0, K)
        sim.tick("CONT", t + 31)
    assert sim.alerts() == []


def test_the_lag_counts_as_uncertainty_and_a_wide_reading_on_a_tick_clears_nothing() -> None:
    """The lag widens the tick's reading; a truck fix timed seconds after the box's must not let a wide reading
    wipe out a far one waiting for confirmation (an insider on the truck's tracker would time it so)."""
    sim = lockstep(1200, second_lag=4.0)
    assert sim.tick("CONT", 931) != []  # 1.2 km less 100 m of uncertainty: still far, confirms
    quiet = lockstep(1200)
    quiet.fix("TRK", 901, 150, 0, K)  # the truck's newest fix, 1 s after the box's: 150 m less 25 m, still far
    assert [a.kind for a in quiet.tick("CONT", 931) if isinstance(a, Alert)] == [SEPARATED]
    wide = lockstep(1200)
    wide.fix("TRK", 904.5, 200, 0, K)  # 4.5 s after: 200 m less 112 m is no verdict either way
    suspect = wide.devices["CONT"].state.suspect
    assert wide.tick("CONT", 931) == []
    assert wide.devices["CONT"].state.suspect == suspect  # the first far reading still waits for its second
    finish(wide)
    assert wide.alerts() == []  # the truck came back: two far readings sharing no fix never came
