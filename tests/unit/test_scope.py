"""The scope rules as pure functions: who sees which device, container, port and alert, and when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tracker.adapters.scope import (
    EARLIEST,
    LATEST,
    UNBOUNDED,
    Haul,
    Scope,
    StaticDirectory,
    clip,
    insurer_windows,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
DIRECTORY = StaticDirectory(
    orgs={"A1": "alpha", "B1": "beta"},
    ports={"A1": frozenset({"santos"}), "B1": frozenset({"paranagua"})},
    containers={"MSCU1234565": ["BOX1"]},
)


def alert(device: str, port: str | None, ts: datetime = T0, others: tuple[str, ...] = ()) -> dict[str, object]:
    return {
        "device_id": device,
        "port": port,
        "ts": ts.isoformat(),
        "evidence": {"devices": [{"id": d} for d in (device, *others)]},
    }


def test_admin_sees_everything() -> None:
    s = Scope("admin", None, directory=DIRECTORY)
    assert s.sees_device("B1") and s.sees_device("nobody") and s.sees_container("X") and s.sees_port("any")
    assert s.sees_alert(alert("zz", None)) and s.windows("X") == [UNBOUNDED]


def test_operator_sees_its_fleet_and_the_default_org_what_nobody_claimed() -> None:
    alpha = Scope("operator", "alpha", directory=DIRECTORY)
    assert alpha.sees_device("A1") and not alpha.sees_device("B1") and not alpha.sees_device("unclaimed")
    assert alpha.sees_alert(alert("A1", "santos")) and not alpha.sees_alert(alert("B1", "santos"))
    assert alpha.sees_alert(alert("B1", None, others=("A1",)))  # a meeting its truck took part in
    assert alpha.candidate_devices() == frozenset({"A1"})
    default = Scope("operator", "default", directory=DIRECTORY)
    assert default.sees_device("unclaimed") and not default.sees_device("A1")
    assert default.candidate_devices() is None
    assert not alpha.sees_container("MSCU1234565")  # its tracker belongs to the default organisation


def test_security_sees_its_ports() -> None:
    santos = Scope("security", "desk", ports=frozenset({"santos"}), directory=DIRECTORY)
    assert santos.sees_port("santos") and not santos.sees_port("paranagua") and not santos.sees_port(None)
    assert santos.sees_alert(alert("B1", "santos")) and not santos.sees_alert(alert("A1", "paranagua"))
    assert not santos.sees_alert(alert("A1", None))
    assert santos.sees_device("A1") and not santos.sees_device("B1") and not santos.sees_device("unseen")
    every = Scope("customs", "default", ports=None, directory=DIRECTORY)
    assert every.sees_port("paranagua") and every.sees_device("unseen") and every.sees_container("X")
    nothing = Scope("security", "desk", ports=frozenset(), directory=DIRECTORY)
    assert not nothing.sees_port("santos") and not nothing.sees_alert(alert("A1", "santos"))


def test_insurer_windows_follow_coverage_and_hauls() -> None:
    cover = [("MSCU1234565", T0, T0 + 10 * H)]
    hauls = [
        Haul("BOX1", "TRK1", T0 - 5 * H, T0 + 2 * H),  # began before the coverage: only its covered part
        Haul("BOX1", "TRK2", T0 + 8 * H, None),  # still hauling: until the coverage ends
        Haul("OTHER", "TRK3", T0, None),  # not a covered container's tracker
    ]
    containers, devices = insurer_windows(cover, DIRECTORY.container_devices, hauls)
    assert containers == {"MSCU1234565": ((T0, T0 + 10 * H),)}
    assert devices == {
        "BOX1": ((T0, T0 + 10 * H),),
        "TRK1": ((T0, T0 + 2 * H),),
        "TRK2": ((T0 + 8 * H, T0 + 10 * H),),
    }
    s = Scope("insurer", "ins", directory=DIRECTORY, coverage=containers, device_windows=devices)
    assert s.sees_container("MSCU1234565", T0 + H) and not s.sees_container("MSCU1234565", T0 + 11 * H)
    assert s.sees_container("MSCU1234565") and not s.sees_container("OTHR0000000")
    assert s.sees_device("TRK1", T0 + H) and not s.sees_device("TRK1", T0 + 3 * H) and not s.sees_device("TRK3")
    assert s.sees_alert(alert("TRK2", "santos", T0 + 9 * H)) and not s.sees_alert(alert("TRK2", "santos", T0))
    assert not s.sees_alert({"device_id": "TRK2", "port": "santos"})  # no time: cannot be placed in a window
    assert s.windows("MSCU1234565") == [(T0, T0 + 10 * H)] and s.windows("OTHR0000000") == []
    assert s.device_time_windows("TRK1") == [(T0, T0 + 2 * H)]
    assert not s.sees_port("santos")
    assert s.candidate_devices() == frozenset({"BOX1", "TRK1", "TRK2"})


def test_insurer_tokens_from_before_organisations_keep_their_devices() -> None:
    s = Scope("insurer", "default", directory=DIRECTORY, devices=frozenset({"BOX1"}))
    assert s.sees_device("BOX1") and s.sees_device("BOX1", T0) and not s.sees_device("TRK1")
    assert s.sees_container("MSCU1234565") and s.windows("MSCU1234565") == [UNBOUNDED]
    assert s.device_time_windows("BOX1") == [UNBOUNDED]


def test_unknown_roles_see_nothing() -> None:
    s = Scope("visitor", "x", directory=DIRECTORY)
    assert not s.sees_device("A1") and not s.sees_alert(alert("A1", "santos")) and not s.sees_container("X")


def test_clip_merges_and_bounds() -> None:
    wins = [(T0, T0 + 2 * H), (T0 + H, T0 + 3 * H), (T0 + 5 * H, T0 + 6 * H)]
    assert clip(wins, T0 + H / 2, T0 + 5 * H + H / 2) == [(T0 + H / 2, T0 + 3 * H), (T0 + 5 * H, T0 + 5 * H + H / 2)]
    assert clip(wins, T0 + 3 * H, T0 + 5 * H) == []
    assert clip([UNBOUNDED], T0, T0 + H) == [(T0, T0 + H)]
    assert (EARLIEST, LATEST) == UNBOUNDED
