"""Thresholds from a [detectors] table: typed, refused when wrong, applied per port, kept over a fence reload."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from geofences import FenceIndex, FenceKind, load_port
from tests.unit.detector_helpers import OPEN, SANTOS, at, offset
from tracker.config import Settings
from tracker.core.engine import Engine
from tracker.core.model import Alert, Ping
from tracker.core.params import DetectorParams, parse
from tracker.core.pipeline import Pipeline
from tracker.detector_config import load_detector_params

SHIPPED = Path(__file__).parents[2] / "geofences" / "detectors.toml"


def test_the_shipped_file_holds_exactly_the_core_defaults() -> None:
    assert load_detector_params(str(SHIPPED)) == DetectorParams()
    assert load_detector_params("") == DetectorParams()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"stops": {}}, "unknown detector detectors.'stops'"),
        ({"unexpected_stop": {"min_duration": 1}}, "unknown threshold detectors.unexpected_stop.'min_duration'"),
        ({"unexpected_stop": {"min_duration_s": "5 min"}}, "bad value for detectors.unexpected_stop.min_duration_s"),
        ({"unexpected_stop": {"min_duration_s": -1}}, "expected a number >= 0"),
        ({"unexpected_stop": {"by_zone": {"lagoon": 10}}}, "bad value for detectors.unexpected_stop.by_zone"),
        ({"signal_lost": {"history": 2.5}}, "bad value for detectors.signal_lost.history"),
        ({"rendezvous": {"port_area_only": "yes"}}, "expected true or false"),
        ({"ports": {"santos": {"pairing": {"infer_s": True}}}}, "detectors.ports.santos.pairing.infer_s"),
        ({"motion": 5}, "detectors.motion must be a table"),
        ({"geofence": {"reach": {"max_speed": 15}}}, "unknown threshold detectors.geofence.reach.'max_speed'"),
        ({"geofence": {"reach": {"access_m": "60 m"}}}, "bad value for detectors.geofence.reach.access_m"),
        ({"geofence": {"reach": 20}}, "bad value for detectors.geofence.reach: expected a table"),
        ({"geofence": {"reach": {"min_gap_s": 1000}}}, "bad thresholds in detectors.geofence.reach"),
        ({"ports": {"callao": {"geofence": {"reach": {"snap": 1}}}}}, "detectors.ports.callao.geofence.reach.'snap'"),
    ],
)
def test_unknown_keys_and_bad_values_are_refused_with_the_key_named(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("'", "'")):
        parse(table)


def test_a_bad_file_stops_the_start_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "d.toml"
    bad.write_text("[detectors.unexpected_stop]\nmin_duration_s = 'x'\n")
    with pytest.raises(ValueError, match=str(bad)):
        load_detector_params(str(bad))
    bad.write_text("[detector.unexpected_stop]\nmin_duration_s = 1\n")
    with pytest.raises(ValueError, match="unknown top-level"):
        load_detector_params(str(bad))
    assert Settings.from_env({"TRACKER_DETECTORS_FILE": str(bad)}).detectors_file == str(bad)


def test_kind_tables_and_lists_are_typed() -> None:
    p = parse(tomllib.loads("[unexpected_stop]\nby_zone = { restricted = 60 }\n[geofence]\nconfirm_entry_kinds = []\n"))
    assert dict(p.unexpected_stop.by_zone) == {FenceKind.RESTRICTED: 60.0}
    assert p.geofence.confirm_entry_kinds == frozenset()
    assert p.signal_lost == DetectorParams().signal_lost


def _stop_alerts(pipeline: Pipeline) -> list[Alert]:
    """A truck standing 200 s in the open port (inside the port boundary only, no authorized zone)."""
    engine = Engine(pipeline)
    engine.run([Ping("TRK-1", at(s), *offset(OPEN, 0.0, 0.0), received=at(s)) for s in range(0, 220, 20)])
    return [e.event for e in engine.emitted if isinstance(e.event, Alert) and e.event.kind == "unexpected_stop"]


def test_a_port_override_applies_to_devices_in_that_port_only() -> None:
    assert _stop_alerts(Pipeline(SANTOS)) == []  # the default limit is longer than 200 s
    base = DetectorParams()
    strict = parse({"unexpected_stop": {"min_duration_s": 60, "by_zone": {}}})
    assert _stop_alerts(Pipeline(SANTOS, detector_params=dataclasses.replace(base, ports={"elsewhere": strict}))) == []
    (alert,) = _stop_alerts(Pipeline(SANTOS, detector_params=dataclasses.replace(base, ports={"santos": strict})))
    assert alert.evidence["threshold_s"] == 60.0 and alert.port == "santos"
    (same,) = _stop_alerts(Pipeline(SANTOS, detector_params=strict))  # or for every port at once
    assert same.id == alert.id


def test_a_fence_reload_keeps_the_thresholds() -> None:
    params = parse({"signal_lost": {"k": 5}, "ports": {"santos": {"rendezvous": {"distance_m": 10}}}})
    old = Pipeline(SANTOS, detector_params=params)
    new = old.with_index(FenceIndex(load_port("santos").fences))
    assert new.detector_params is params and new.detectors == old.detectors and new._ports is old._ports
    assert old.detectors[1].params.k == 5  # type: ignore[attr-defined]


def test_the_reachability_thresholds_are_a_sub_table_merged_per_port() -> None:
    p = parse(
        tomllib.loads(
            "[geofence.reach]\nmax_speed_ms = 15\n"
            "[ports.callao.geofence.reach]\naccess_m = 40\n"
            "[ports.elsewhere.geofence]\nreach = false\n"
        )
    )
    default = DetectorParams().geofence.reach
    assert default is not None and p.geofence.reach == dataclasses.replace(default, max_speed_ms=15.0)
    callao = p.for_port("callao").geofence.reach
    assert callao == dataclasses.replace(default, max_speed_ms=15.0, access_m=40.0)  # over the file's base
    assert p.for_port("elsewhere").geofence.reach is None
    assert parse({"geofence": {"reach": True}}).geofence.reach == default


def test_the_prism_speed_from_the_file_decides_a_sparse_crossing() -> None:
    """DSP 07-09: two fixes 60 s apart either side, 1,329 m round it by road. At the default 20 m/s (1,230 m in
    60 s) only the way through fits; allowed 25 m/s, the way round does too and nothing is proven."""
    south, north = (-46.2934876, -23.975693), (-46.2984977, -23.9670165)  # as in test_reachability

    def high(params: DetectorParams) -> list[Alert]:
        engine = Engine(Pipeline(FenceIndex(load_port("santos").fences), detector_params=params))
        fixes = [(south, 0), (north, 60), (north, 120)]
        engine.run([Ping("BOX-1", at(s), lon, lat, received=at(s)) for (lon, lat), s in fixes])
        alerts = [e.event for e in engine.emitted if isinstance(e.event, Alert)]
        return [a for a in alerts if a.kind == "geofence_cross" and a.severity.value == "high"]

    assert len(high(DetectorParams())) == 1
    assert high(parse({"ports": {"santos": {"geofence": {"reach": {"max_speed_ms": 25}}}}})) == []
