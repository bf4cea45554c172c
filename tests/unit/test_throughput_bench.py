"""bench/throughput.py on a small world: every method agrees with ours, the result file keeps other keys.

No figure is checked (a unit test cannot time anything meaningfully on a shared CI machine); what is
checked is that the runner works and that the answers it compares really are equal, so a regression in
FenceIndex against STRtree, the naive loop or geopandas fails here too. PostGIS is left to the real run.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.throughput import main
from geofences import load_port


def test_geofence_runner_on_a_small_world(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    out.write_text(json.dumps({"core": {"kept": True}}))
    argv = ["geofence", "--fences", "500", "--points", "3000", "--repeats", "1", "--per-point", "500"]
    argv += ["--naive-points", "50", "--no-postgis", "--out", str(out), "--no-plot"]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["core"] == {"kept": True}
    res = data["geofence"]
    assert res["world"]["fences"] == 500
    real = len(load_port("santos").fences) + len(load_port("callao").fences)  # the shipped sets, then synthetic
    assert res["world"]["synthetic_fences"] == 500 - real
    methods = res["methods"]
    for name in ("strtree_predicate", "strtree_bbox_intersects_xy", "naive_loop", "geopandas_sjoin"):
        assert methods[name]["agrees_with_ours"] is True, name
    assert methods["ours_per_point"]["agrees_with_batch"] is True
    assert methods["ours_batch_raw"]["pairs"] > 1000
    assert res["world"]["points_where_hysteresis_changes_the_answer"] > 0
    assert methods["postgis"] == {"skipped": "--no-postgis"}
    assert res["geofence_ratio_vs_postgis"] is None
    assert res["geofence_ratio_vs_naive"] is not None


def test_core_measures_a_tiny_scenario_with_its_profile() -> None:
    from bench.hotpath import STAGES, core

    res = core(trucks=3, hours=0.25, seed=1, runs=2, profile=True)
    assert res["pings"] > 50 and res["devices"] >= 6
    assert res["runs"] == 2 and len(res["runs_s"]) == 2
    assert res["core_pings_per_s"] > 0 and res["us_per_ping"] > 0
    assert res["target_pings_per_s"] == 25_000 and isinstance(res["target_met"], bool)
    stages = res["profile"]["stages"]
    assert set(stages) == set(STAGES)
    # every ping goes through Engine.feed once; each accepted one through the geofence step and all detectors
    assert stages["engine_feed (all per-ping work)"]["calls"] == res["pings"]
    assert 0 < stages["geofence_step"]["calls"] <= res["pings"]
    assert stages["detector_on_fix"]["calls"] == 5 * stages["pipeline_step"]["calls"]
    assert stages["ticks (Engine.tick)"]["calls"] > 0


def test_state_sizes_every_device_of_a_tiny_fleet() -> None:
    from bench.hotpath import deep_size, state

    res = state([20], fixes=2, seed=1)
    st = res["by_devices"]["20"]
    assert st["devices"] == 20 and st["fixes_per_device"] == 2
    assert 100 < st["serialized_bytes_per_device_mean"] <= st["serialized_bytes_max"]
    assert st["memory_bytes_per_device"] > st["serialized_bytes_per_device_mean"] / 4
    assert res["state_bytes_per_device"] == st["serialized_bytes_per_device_mean"]
    assert set(res["target_met"]) == {"serialized", "memory"}
    shared = ["x" * 100]
    assert deep_size([shared, shared]) == deep_size([shared])  # an object is counted once


def test_e2e_frames_split_and_intruders() -> None:
    """The load generator's parts: frames parse back, a device keeps one connection and its order, and an
    intruder's walk raises geofence_enter on its restricted fence in the core (an entry needs two fixes inside)."""
    from datetime import UTC, datetime

    from bench.e2e import frames_of, intruders, split, steps
    from geofences import FenceIndex, load_port
    from tracker.adapters.decode import Limits, decode_mqtt
    from tracker.core.engine import Engine
    from tracker.core.model import Alert, Ping
    from tracker.core.pipeline import Pipeline
    from tracker.sim.rawmqtt import packets as _packets

    per_dev = steps("T", 5, 0, 4, 1_700_000_000.0)
    per_conn = split(per_dev, 2)
    assert [len(c) for c in per_conn] == [12, 8]
    for c, msgs in enumerate(per_conn):
        topics = [t for t, _ in msgs]
        assert all(int(t.split("-")[1].split("/")[0]) % 2 == c for t in topics)
        for d in range(c, 5, 2):
            mine = [json.loads(p)["ts"] for t, p in msgs if t == f"trackers/T-{d:05d}/ping"]
            assert mine == sorted(mine) and len(mine) == 4
    buf = b"".join(frames_of(per_conn[0]))
    packets, rest = _packets(buf + b"\x32")
    assert len(packets) == 12 and rest == len(buf)
    assert all(t == 0x32 for t, _, _ in packets)

    now = 1_700_000_000.0
    index = FenceIndex(load_port("santos").fences, hysteresis_m=25.0, entry_margin_m=10.0)
    for intr in intruders("I", 3):
        engine = Engine(Pipeline(index), tick_every_s=86400.0)
        at = datetime.fromtimestamp(now + 60, UTC)
        for topic, payload in [intr.fix(now - 30, intr.wait, 0.0), *intr.walk_in(now)]:
            ping = decode_mqtt(topic, payload, at, Limits())
            assert isinstance(ping, Ping)
            engine.feed(ping)
        enters = [
            e.event
            for e in engine.emitted
            if isinstance(e.event, Alert) and e.event.kind == "geofence_enter" and e.event.fence_id == intr.fence
        ]
        assert len(enters) == 1, intr
