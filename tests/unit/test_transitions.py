"""Event ordering is part of the contract detectors rely on for replays."""

from __future__ import annotations

from geofences import Transition, TransitionKind, classify, steady_state

E, X, C = TransitionKind.ENTER, TransitionKind.EXIT, TransitionKind.CROSS


def test_no_change_emits_nothing() -> None:
    assert classify(frozenset({"a"}), frozenset({"a"})) == []
    assert classify(frozenset(), frozenset()) == []


def test_exits_then_enters_then_crosses_each_sorted() -> None:
    out = classify(frozenset({"b", "a", "keep"}), frozenset({"keep", "z", "c"}), crossed=("gate-2", "gate-1"))
    assert out == [
        Transition(X, "a"),
        Transition(X, "b"),
        Transition(E, "c"),
        Transition(E, "z"),
        Transition(C, "gate-2"),
        Transition(C, "gate-1"),
    ]


def test_crossed_fences_already_in_old_or_new_are_not_crosses() -> None:
    out = classify(frozenset({"a"}), frozenset({"b"}), crossed=("a", "b", "g", "g"))
    assert out == [Transition(X, "a"), Transition(E, "b"), Transition(C, "g")]


def test_steady_state_and_kinds_not_emitted() -> None:
    assert steady_state("a", frozenset({"a"})) is TransitionKind.INSIDE
    assert steady_state("a", frozenset()) is TransitionKind.OUTSIDE
    assert TransitionKind("inside") == "inside"
    assert all(
        t.kind not in (TransitionKind.INSIDE, TransitionKind.OUTSIDE)
        for t in classify(frozenset({"a"}), frozenset({"b"}))
    )
