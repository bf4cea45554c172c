"""What live-feed viewers cost the single writer: positions fan-out per committed batch, in process.

``Delivery.positions`` runs inside the writer after each commit (tracker/service.py ``_adopt``): it
builds one ``PositionItem`` per fix and appends to each viewer's pending list after that viewer's
scope check. This runner times that call for a batch of ``--batch`` fixes with 0, 1, 10 and 100
viewers (each with a scope predicate of the shape the API builds: a port filter and a device check),
and the JSON encoding of one positions message (done by each viewer's own sender task, not the
writer). Figures are indicative on a shared machine; the lead reruns them on a quiet one.

    python bench/feeds.py [--batch 500] [--rounds 200] [--out bench/results/feeds.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tracker.config import Settings
from tracker.core.model import DeviceKind, Ping
from tracker.core.state import DeviceState
from tracker.delivery import Delivery
from tracker.feeds import PositionItem, Subscriber
from tracker.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]


def _batch(size: int, devices: int) -> tuple[list[tuple[Ping, object]], dict[str, DeviceState]]:
    t0 = datetime.now(UTC)
    pings: list[tuple[Ping, object]] = []
    states: dict[str, DeviceState] = {}
    for i in range(size):
        dev = f"TRK-{i % devices:05d}"
        pings.append((Ping(dev, t0 + timedelta(seconds=i), -46.3 + i * 1e-6, -23.95, 5.0, 90.0), ()))
        states[dev] = DeviceState(dev, DeviceKind.TRUCK, fences=frozenset({"santos-terminal-1"}))
    return pings, states


def run(batch: int, rounds: int) -> dict[str, object]:
    pings, states = _batch(batch, max(1, batch // 2))
    devices = {dev: DeviceKind.TRUCK for dev in states}
    visible = frozenset(list(states)[: len(states) // 2])  # each viewer sees half of the fleet

    def port_of(_fence_id: str) -> str | None:
        return "santos"

    results: dict[str, object] = {}
    for viewers in (0, 1, 10, 100):
        delivery = Delivery(Settings(), Metrics(), stopping=lambda: False)
        subs = [
            Subscriber(
                "ws",
                500,
                10**9,
                alerts=False,
                positions=True,
                sees_position=lambda p: p.port in (None, "santos") and p.device_id in visible,
            )
            for _ in range(viewers)
        ]
        for sub in subs:
            delivery.hub.subscribers.add(sub)
        times = []
        received = 0
        for _ in range(rounds):
            start = time.perf_counter()
            delivery.positions(pings, states, devices, port_of)
            times.append(time.perf_counter() - start)
            for sub in subs:
                received = len(sub.take_positions())
        per_batch_us = statistics.median(times) * 1e6
        results[str(viewers)] = {
            "median_us_per_batch": round(per_batch_us, 1),
            "us_per_fix": round(per_batch_us / batch, 3),
            "us_per_fix_per_viewer": round(per_batch_us / batch / viewers, 3) if viewers else None,
            "fixes_per_viewer_per_batch": received,  # each viewer's scope admits half of the fleet
        }
    items = [
        PositionItem(p.device_id, "truck", p.ts, p.lon, p.lat, p.speed, p.heading, "santos").to_json() for p, _ in pings
    ]
    encode = []
    for _ in range(rounds):
        start = time.perf_counter()
        text = json.dumps({"type": "positions", "items": items})
        encode.append(time.perf_counter() - start)
    return {
        "batch": batch,
        "rounds": rounds,
        "fan_out_by_viewers": results,
        "encode_positions_message_us": round(statistics.median(encode) * 1e6, 1),
        "positions_message_bytes": len(text.encode()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "feeds.json")
    args = parser.parse_args(argv)
    figures = run(args.batch, args.rounds)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    out = {
        "commit": commit.stdout.strip(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        **figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
