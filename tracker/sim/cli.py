"""``tracker simulate``: generate a labelled port-traffic scenario, write it as JSONL, optionally replay it."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from tracker.sim.anomalies import ALL_KINDS, AnomalyKind
from tracker.sim.gps import GpsConfig
from tracker.sim.scenario import DEFAULT_START, SimConfig, generate


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tracker simulate", description=__doc__)
    p.add_argument("--port", default="santos")
    p.add_argument("--trucks", type=int, default=50)
    p.add_argument("--hours", type=float, default=2.0, help="window in which trips start")
    p.add_argument("--anomaly-share", type=float, default=0.05)
    p.add_argument("--anomalies", default=",".join(ALL_KINDS), help="comma-separated kinds to inject")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", default=DEFAULT_START.isoformat(), help="scenario start, ISO-8601 with offset")
    p.add_argument("--sigma", type=float, default=5.0, help="GPS noise, metres (1 sigma)")
    p.add_argument("--out", default=None, help="JSONL file to write")
    p.add_argument("--mqtt-host", default=None, help="replay over MQTT to this broker")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--mqtt-username", default="")
    p.add_argument("--mqtt-password", default="")
    p.add_argument("--speedup", type=float, default=60.0, help="0 = as fast as possible")
    p.add_argument("--max-messages", type=int, default=5_000_000)
    p.add_argument("--max-seconds", type=float, default=3600.0)
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback broker")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        kinds = tuple(AnomalyKind(k.strip()) for k in args.anomalies.split(",") if k.strip())
        start = datetime.fromisoformat(args.start)
    except ValueError as exc:
        print(f"tracker simulate: {exc}", file=sys.stderr)
        return 2
    if start.tzinfo is None:
        print("tracker simulate: --start needs a UTC offset", file=sys.stderr)
        return 2
    cfg = SimConfig(
        port=args.port,
        trucks=args.trucks,
        hours=args.hours,
        anomaly_share=args.anomaly_share,
        seed=args.seed,
        start=start,
        gps=GpsConfig(sigma_m=args.sigma),
        anomaly_kinds=kinds,
    )
    began = time.perf_counter()
    scenario = generate(cfg)
    took = time.perf_counter() - began
    kinds_seen = Counter(t.kind.value for t in scenario.truth)
    print(
        f"{scenario.trips} trips ({scenario.clean_trips} clean), {len(scenario.devices)} devices, "
        f"{len(scenario.pings)} pings, {len(scenario.inspections)} inspections, {scenario.km:.1f} km "
        f"in {took:.1f} s; anomalies: {dict(sorted(kinds_seen.items())) or 'none'}",
        file=sys.stderr,
    )
    if args.out:
        scenario.write_jsonl(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.mqtt_host:
        from tracker.sim.publish import PublishLimits, publish

        try:
            sent = publish(
                scenario,
                host=args.mqtt_host,
                port=args.mqtt_port,
                username=args.mqtt_username,
                password=args.mqtt_password,
                speedup=args.speedup or None,
                limits=PublishLimits(args.max_messages, args.max_seconds, args.allow_remote),
            )
        except (OSError, ValueError) as exc:
            print(f"tracker simulate: {exc}", file=sys.stderr)
            return 1
        print(f"published {sent} messages to {args.mqtt_host}:{args.mqtt_port}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
