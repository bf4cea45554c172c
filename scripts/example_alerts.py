"""Print one alert of each kind from a simulated Santos day with injected anomalies (for the README).

Run: python scripts/example_alerts.py [--seed N]. Evidence is shortened to its first keys so
the README stays readable; the stored alerts carry all of it.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from typing import Any

from geofences import FenceIndex, LocalProjection, load_port
from tracker.config import Settings
from tracker.core.engine import Engine
from tracker.core.model import Alert, Inspection, Ping
from tracker.core.pipeline import Pipeline
from tracker.sim.scenario import SimConfig, generate


def shorten(value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict):
        items = list(value.items())[:10]
        return {k: shorten(v, depth + 1) for k, v in items} | ({"…": "…"} if len(value) > 10 else {})
    if isinstance(value, list):
        return [shorten(v, depth + 1) for v in value[:2]] + (["…"] if len(value) > 2 else [])
    if isinstance(value, float):
        return round(value, 6)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    scenario = generate(SimConfig(port="santos", trucks=60, hours=4, anomaly_share=0.5, seed=args.seed))
    engine = Engine(
        Pipeline(FenceIndex(load_port("santos").fences, entry_margin_m=Settings().entry_margin_m)),
        kinds=scenario.devices,
        containers={dev: [dev] for dev, kind in scenario.devices.items() if kind.value == "container"},
    )
    first = min(p.ts for p in scenario.pings)
    for container, truck in scenario.pairs.items():
        engine.pair(container, truck, first)
    items: list[Ping | Inspection] = [*scenario.pings, *scenario.inspections, *intruder(first)]
    items.sort(key=lambda i: i.ts if isinstance(i, Inspection) else (i.received or i.ts))
    engine.run(items)
    seen: dict[str, Alert] = {}
    for emitted in engine.emitted:
        ev = emitted.event
        if not isinstance(ev, Alert):
            continue
        label = ev.kind + (f":{ev.evidence.get('reason')}" if ev.kind == "post_inspection_access" else "")
        if ev.severity.value != "info" or ev.kind == "access_window_opened":
            seen.setdefault(label, ev)
    for label in sorted(seen):
        print(f"# {label}")
        body = seen[label].to_json()
        for key in ("id", "port", "device_id", "fence_id"):
            body.pop(key, None)
        print(json.dumps(shorten(body), ensure_ascii=False))
    return 0


def intruder(start: datetime) -> list[Ping]:
    """A truck no simulated trip contains: it drives off the road into a vacant (restricted) lot."""
    fence = next(f for f in load_port("santos").fences if f.kind.value == "restricted")
    pt = fence.geometry.representative_point()
    proj = LocalProjection(float(pt.x), float(pt.y))
    out = []
    for i, north in enumerate((-150.0, -100.0, -50.0, 0.0, 10.0)):
        lon, lat = proj.to_lonlat(0.0, north)
        ts = start + timedelta(hours=1, seconds=10 * i)
        out.append(Ping("TRK-INTRUDER", ts, float(lon), float(lat), speed=5.0, received=ts))
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
