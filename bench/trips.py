"""Trips on simulator traffic: what the segmentation produces and what it costs on the hot path.

Replays a labelled Santos scenario through :class:`tracker.core.engine.Engine` as the detection benchmark
does (delivery order, duplicates, late fixes, customs decisions, declared pairings, timer ticks), once
with trips and dwell alerts and once without either, and reports:

* CPU time per fix with and without (median of ``--runs`` replays each; ``time.process_time``, so other
  load on the machine inflates both alike rather than the difference);
* trips by device kind and end reason, truck port visits against the simulator's planned trips (every
  clean truck trip enters through a gate and leaves through one), outputs written per trip (the open
  trip is re-written at most every ``update_every_s`` of event time, plus on changes), stops, visits;
* how many trips break an invariant (overlap, times that do not add up, stops or visits outside the
  trip): must be 0;
* dwell alerts raised (the clean traffic stays under every default limit: expected 0 but for anomalies
  that make a device stay, e.g. a long unexpected stop on a quay).

Run: ``python bench/trips.py`` (60 trucks, 2 h, seed 1, 3 runs; about a minute per run on one core)
writes ``bench/results/trips.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root holds the bench package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.detection import replay as detection_replay
from geofences import FenceIndex, load_port
from tracker.config import Settings
from tracker.core.detector import FixContext, TickContext
from tracker.core.engine import Engine
from tracker.core.fix import Fix
from tracker.core.model import Alert, DeviceKind, Event, Inspection, Ping
from tracker.core.pipeline import Pipeline, default_detectors
from tracker.core.trips import Trip, TripSegmenter, TripState, trips_in
from tracker.sim.scenario import Scenario, SimConfig, generate

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "trips.json"


class NoTrips(TripSegmenter):
    """The segmenter switched off: the baseline the cost is measured against."""

    def fix(
        self, state: TripState | None, ping: Ping, ctx: FixContext, events: Sequence[Event]
    ) -> tuple[TripState, tuple[Trip, ...]]:
        return _EMPTY, ()

    def tick(
        self, state: TripState | None, now: datetime, ctx: TickContext, events: Sequence[Event]
    ) -> tuple[TripState | None, tuple[Trip, ...]]:
        return state, ()

    def inspection(
        self,
        state: TripState | None,
        inspection: Inspection,
        last: Fix | None,
        index: FenceIndex,
        fences: frozenset[str],
        events: Sequence[Event],
    ) -> tuple[TripState, tuple[Trip, ...]]:
        return _EMPTY, ()

    def next_due(self, ts: TripState | None, last: Fix | None, kind: DeviceKind, index: FenceIndex) -> datetime | None:
        return None


_EMPTY = TripState()


def replay(scenario: Scenario, *, with_trips: bool) -> Engine:
    index = FenceIndex(load_port(scenario.port).fences, entry_margin_m=Settings().entry_margin_m)
    if with_trips:
        pipeline = Pipeline(index)
    else:
        detectors = tuple(d for d in default_detectors() if d.name != "dwell")
        pipeline = Pipeline(index, detectors=detectors, trips=NoTrips())
    return detection_replay(scenario, pipeline=pipeline)


def broken(trips: Sequence[Trip]) -> list[str]:
    """Invariant violations among one device's trips (the unit tests' properties, on real traffic)."""
    out: list[str] = []
    ordered = sorted(trips, key=lambda t: t.start)
    out += [f"{a.id} overlaps {b.id}" for a, b in itertools.pairwise(ordered) if a.end > b.start]
    for t in trips:
        if abs(t.moving_s + t.stopped_s - t.duration_s) > 1e-6 or t.moving_s < -1e-6:
            out.append(f"{t.id}: moving + stopped != duration")
        last = t.start
        for s in t.stops:
            if not last <= s.start < s.end <= t.end:
                out.append(f"{t.id}: stop outside the trip or overlapping")
            last = s.end
        if any(not t.start <= v.enter <= t.end or (v.exit is not None and v.exit > t.end) for v in t.visits):
            out.append(f"{t.id}: visit outside the trip")
    return out


def figures(scenario: Scenario, engine: Engine) -> dict[str, Any]:
    final = trips_in(engine.trips)
    per_device: dict[str, list[Trip]] = defaultdict(list)
    for t in final.values():
        per_device[t.device_id].append(t)
    closed = [t for t in final.values() if t.closed]
    reasons = Counter(f"{t.kind.value}:{t.end_reason}" for t in closed)
    dwell = [e.event for e in engine.emitted if isinstance(e.event, Alert) and e.event.kind == "dwell"]
    return {
        "trips": len(final),
        "closed": len(closed),
        "open_at_end": len(final) - len(closed),
        "by_end_reason": dict(sorted(reasons.items())),
        "truck_port_exits": reasons.get("truck:port_exit", 0),
        "simulated_truck_trips": scenario.trips,
        "outputs": len(engine.trips),
        "outputs_per_trip": round(len(engine.trips) / max(1, len(final)), 1),
        "stops_per_trip": round(statistics.mean([len(t.stops) for t in closed] or [0]), 2),
        "visits_per_trip": round(statistics.mean([len(t.visits) for t in closed] or [0]), 2),
        "median_km": round(statistics.median([t.distance_m for t in closed] or [0]) / 1000, 2),
        "median_duration_min": round(statistics.median([t.duration_s for t in closed] or [0]) / 60, 1),
        "with_alerts": sum(1 for t in closed if t.alerts),
        "with_customs": sum(1 for t in closed if not t.customs.empty()),
        "invariant_violations": sum(len(broken(ts)) for ts in per_device.values()),
        "dwell_alerts": len(dwell),
        "dwell_by_fence_kind": dict(Counter(str(a.evidence["fence_kind"]) for a in dwell)),
    }


def timed(scenario: Scenario, *, with_trips: bool) -> tuple[float, Engine]:
    start = time.process_time()
    engine = replay(scenario, with_trips=with_trips)
    return time.process_time() - start, engine


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trucks", type=int, default=60)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--anomaly-share", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    cfg = SimConfig(
        port="santos", trucks=args.trucks, hours=args.hours, anomaly_share=args.anomaly_share, seed=args.seed
    )
    scenario = generate(cfg)
    fixes = len(scenario.pings)
    base_s, with_s = [], []
    engine: Engine | None = None
    for _ in range(args.runs):  # interleaved, so a change in machine load hits both alike
        base_s.append(timed(scenario, with_trips=False)[0])
        cpu, engine = timed(scenario, with_trips=True)
        with_s.append(cpu)
    assert engine is not None
    base, full = statistics.median(base_s), statistics.median(with_s)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    result = {
        "benchmark": "trips",
        "scenario": {
            "port": "santos",
            "trucks": args.trucks,
            "hours": args.hours,
            "seed": args.seed,
            "anomaly_share": args.anomaly_share,
            "fixes": fixes,
        },
        "cost": {
            "runs": args.runs,
            "without_us_per_fix": round(base / fixes * 1e6, 1),
            "with_us_per_fix": round(full / fixes * 1e6, 1),
            "added_us_per_fix": round((full - base) / fixes * 1e6, 1),
            "added_share": round(full / base - 1, 3),
        },
        "figures": figures(scenario, engine),
        "git_commit": commit.stdout.strip() or None,
        "python": sys.version.split()[0],
        "finished_at": datetime.now(UTC).isoformat(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"cost": result["cost"], "figures": result["figures"]}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
