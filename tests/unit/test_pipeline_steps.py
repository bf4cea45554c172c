"""The pipeline's detectors are a declared list of typed steps: every hook is called on every step.

Two kinds of check. Behaviour: a detector whose ``name`` is not a field of ``DeviceState`` still keeps its
state (through its own slot accessor), and a detector that is neither the pairing nor the access-window one
still hears a declared pairing; lookups by name (``getattr(state, det.name)``) or by type
(``isinstance(det, PairingDetector)``) would fail both. Source: the modules that drive the detectors call no
``getattr``/``setattr``/``hasattr`` and test no detector's type, so such a lookup cannot come back unseen.
"""

from __future__ import annotations

import ast
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

from tracker.core.detector import Detector, FixContext
from tracker.core.model import DeviceKind, Event, Ping
from tracker.core.pipeline import Pipeline
from tracker.core.state import DeviceState
from tracker.core.stops import StopDetector, StopState

from .detector_helpers import OPEN, SANTOS, T0

CORE = Path(__file__).resolve().parents[2] / "tracker" / "core"
DRIVERS = ("pipeline.py", "batch.py", "engine.py")


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


class RenamedStops(StopDetector):
    """The stop rule under a name that is no field of ``DeviceState``; its slot stays ``unexpected_stop``."""

    name: ClassVar[str] = "stops_under_another_name"


class Pairings(Detector[StopState | None]):
    """Remembers the time of the last declared pairing in a slot of its own choosing, and does nothing else."""

    name: ClassVar[str] = "pairings_seen"

    def read(self, device: DeviceState) -> StopState | None:
        return device.unexpected_stop

    def write(self, device: DeviceState, state: StopState | None) -> None:
        device.unexpected_stop = state

    def on_fix(self, state: StopState | None, ping: Ping, ctx: FixContext) -> tuple[StopState | None, list[Event]]:
        return state, []

    def on_pair(self, state: StopState | None, truck_id: str | None, at: datetime) -> StopState | None:
        return StopState(start=at, last_in=at, authorized=True, alert=None)


def test_a_detector_keeps_its_state_through_its_slot_whatever_its_name() -> None:
    pipeline = Pipeline(SANTOS, detectors=(RenamedStops(),))
    state = DeviceState("TRK-1", DeviceKind.TRUCK)
    for s in range(0, 1200, 30):  # standing still in the open for 20 minutes
        state = pipeline.step(state, Ping("TRK-1", at(s), *OPEN)).state
    assert state.unexpected_stop is not None and state.unexpected_stop.start == at(0)
    assert pipeline.next_due(state) is not None  # next_due read the same slot


def test_a_declared_pairing_reaches_every_step_that_declares_the_hook() -> None:
    pipeline = Pipeline(SANTOS, detectors=(Pairings(),))
    state = DeviceState("BOX-1", DeviceKind.CONTAINER)
    paired = pipeline.pair(state, "TRK-1", at(5)).state
    assert paired.unexpected_stop == StopState(at(5), at(5), True, None)
    assert state.unexpected_stop is None  # the input state is left as it was


def test_hooks_a_detector_does_not_declare_keep_its_state() -> None:
    """The defaults are no-ops: an inspection or a tick leaves a detector without those rules as it was."""
    pipeline = Pipeline(SANTOS, detectors=(Pairings(),))
    state = pipeline.pair(DeviceState("BOX-1", DeviceKind.CONTAINER), "TRK-1", at(0)).state
    state = pipeline.step(state, Ping("BOX-1", at(1), *OPEN)).state
    ticked = pipeline.tick(state, at(100))
    assert ticked.state.unexpected_stop == StopState(at(0), at(0), True, None) and not ticked.alerts


def _dispatch_by_name_or_type(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        if node.func.id in {"getattr", "setattr", "hasattr", "delattr"}:
            found.append(f"{node.lineno}: {node.func.id}()")
        elif node.func.id == "isinstance" and len(node.args) == 2 and "Detector" in ast.unparse(node.args[1]):
            found.append(f"{node.lineno}: isinstance(..., {ast.unparse(node.args[1])})")
    return found


def test_the_drivers_of_the_detectors_look_nothing_up_by_name_or_type() -> None:
    problems = {name: _dispatch_by_name_or_type((CORE / name).read_text()) for name in DRIVERS}
    assert not any(problems.values()), problems


def test_the_source_check_sees_a_lookup_by_name() -> None:
    """The check above is not vacuous: the old dispatch is caught."""
    old = "for det in dets:\n    setattr(new, det.name, det.on_fix(getattr(new, det.name), p, c))\n"
    assert len(_dispatch_by_name_or_type(old)) == 2
    assert _dispatch_by_name_or_type("if isinstance(det, PairingDetector):\n    pass\n")
