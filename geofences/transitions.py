"""Turning two consecutive memberships into the events detectors react to.

Kept separate from the index so detectors can be tested with hand-written memberships, and so the
order of events is fixed in one place: exits before enters means a device moving from a gate straight
into a terminal is reported as leaving the gate first, which is the order it happened in.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Transition", "TransitionKind", "classify", "steady_state"]


class TransitionKind(enum.StrEnum):
    """``enter``/``exit``/``cross`` are events; ``inside``/``outside`` name the steady states between
    them (for dwell rules and status displays) and are never produced by :func:`classify`."""

    ENTER = "enter"
    EXIT = "exit"
    INSIDE = "inside"
    OUTSIDE = "outside"
    CROSS = "cross"


@dataclass(frozen=True, slots=True)
class Transition:
    kind: TransitionKind
    fence_id: str


def classify(old: frozenset[str], new: frozenset[str], crossed: Sequence[str] = ()) -> list[Transition]:
    """Events between two consecutive memberships: exits (by id), then enters (by id), then crosses in
    the order given (the index gives them in travel order). Ids sorted so replays are deterministic."""
    events = [Transition(TransitionKind.EXIT, f) for f in sorted(old - new)]
    events += [Transition(TransitionKind.ENTER, f) for f in sorted(new - old)]
    seen = old | new
    for f in crossed:
        if f not in seen:
            events.append(Transition(TransitionKind.CROSS, f))
            seen = seen | {f}
    return events


def steady_state(fence_id: str, members: frozenset[str]) -> TransitionKind:
    return TransitionKind.INSIDE if fence_id in members else TransitionKind.OUTSIDE
