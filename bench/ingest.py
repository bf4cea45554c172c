"""End-to-end ingest benchmark on the real broker and database (loopback only, bounded).

Measures, in one run on the same machine:
* baseline: the broker alone — N QoS 1 messages from a publisher to a plain subscriber;
* throughput: the same N pings published by devices until the service has stored them all
  (decode, the full detector pipeline, COPY + ON CONFLICT, state and outbox in one transaction);
* alert latency: single fixes that enter a restricted fence, from publish to the alert
  arriving on ``alerts/#`` (median and p95 over a few dozen trucks).

Run: ``python bench/ingest.py [--pings 20000 --devices 200]``; writes bench/results/ingest.json.
It starts its own broker and database through ``deploy/stack.sh infra`` in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from geofences import FenceKind, load_port
from tracker.config import Settings
from tracker.service import Service

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack(command: str, env: dict[str, str], *extra: str) -> None:
    subprocess.run(["bash", str(REPO / "deploy/stack.sh"), command, *extra], env=env, check=True, capture_output=True)


def client(port: int, user: str, password: str, client_id: str = "") -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.username_pw_set(user, password)
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.monotonic() + 10
    while not c.is_connected():
        if time.monotonic() > deadline:
            raise RuntimeError("cannot connect to the broker")
        time.sleep(0.01)
    return c


def publish_all(c: paho.Client, messages: list[tuple[str, bytes]]) -> None:
    infos = [c.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(30)


def baseline(port: int, secrets: dict[str, str], messages: list[tuple[str, bytes]]) -> float:
    """Seconds for the broker alone to move the messages from a device to a subscriber."""
    got: queue.Queue[None] = queue.Queue()
    sub = client(port, secrets["TRACKER_MQTT_USERNAME"], secrets["TRACKER_MQTT_PASSWORD"], "bench-baseline")
    sub.on_message = lambda c, u, m: got.put(None)
    done: list[int] = []
    sub.on_subscribe = lambda c, u, mid, rc, p: done.append(mid)
    sub.subscribe("trackers/+/ping", qos=1)
    while not done:
        time.sleep(0.01)
    pub = client(port, secrets["TRACKER_MQTT_DEVICE_USERNAME"], secrets["TRACKER_MQTT_DEVICE_PASSWORD"])
    began = time.perf_counter()
    publish_all(pub, messages)
    for _ in messages:
        got.get(timeout=60)
    took = time.perf_counter() - began
    sub.unsubscribe("trackers/+/ping")
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()
    return took


def fixes(devices: int, count: int, t0: float) -> list[tuple[str, bytes]]:
    """Trucks driving 10 m/s east outside every Santos fence, one fix per second each."""
    out = []
    for i in range(count):
        dev, step = i % devices, i // devices
        body = {"ts": t0 + step, "lat": -24.30 + dev * 1e-3, "lon": -46.20 + step * 1e-4, "speed": 10.0}
        out.append((f"trackers/BENCH-{dev:05d}/ping", json.dumps(body).encode()))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stack_dir = Path(tempfile.mkdtemp(prefix="port-tracker-bench-", dir="/tmp"))
    os.chmod(stack_dir, 0o755)  # noqa: S103 - the postgres and mosquitto users must reach it when run as root
    mqtt_port, pg_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(TRACKER_STACK_DIR=str(stack_dir), TRACKER_MQTT_PORT=str(mqtt_port), TRACKER_PG_PORT=str(pg_port))
    await asyncio.to_thread(stack, "infra", env)
    try:
        text = await asyncio.to_thread((stack_dir / "secrets.env").read_text)
        secrets = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        owner = await asyncio.to_thread((stack_dir / "owner.env").read_text)
        # the service never migrates: `tracker migrate` as the schema owner, as deploy/stack.sh up does
        migrate_env = {**env, "TRACKER_DB_DSN": secrets["TRACKER_DB_DSN"]}
        migrate_env["TRACKER_DB_OWNER_DSN"] = owner.split("=", 1)[1].strip()
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tracker", "migrate"],
            env=migrate_env,
            check=True,
            capture_output=True,
        )
        now = time.time()
        messages = fixes(args.devices, args.pings, now - args.pings // args.devices - 60)
        base_s = baseline(mqtt_port, secrets, messages)
        settings = Settings.from_env(
            {
                **{k: v for k, v in secrets.items() if k.startswith("TRACKER_")},
                "TRACKER_MQTT_HOST": "127.0.0.1",
                "TRACKER_MQTT_PORT": str(mqtt_port),
                "TRACKER_HTTP_PORT": "0",
                "TRACKER_UNKNOWN_DEVICES": "register",
                "TRACKER_MQTT_CLIENT_ID": "bench-service",
                "TRACKER_FENCE_FILES": str(REPO / "geofences/ports/santos.geojson"),
            }
        )
        service = Service(settings)
        await service.start(http=False)
        assert service.link is not None
        await service.link.wait_connected(10, subscribed=True)
        conn = await asyncpg.connect(secrets["TRACKER_DB_DSN"])
        try:
            pub = client(mqtt_port, secrets["TRACKER_MQTT_DEVICE_USERNAME"], secrets["TRACKER_MQTT_DEVICE_PASSWORD"])
            began = time.perf_counter()
            await asyncio.to_thread(publish_all, pub, messages)
            while await conn.fetchval("SELECT count(*) FROM pings WHERE device_id LIKE 'BENCH-%'") < len(messages):
                if time.perf_counter() - began > 600:
                    raise RuntimeError("the service did not store every ping within 600 s")
                await asyncio.sleep(0.05)
            ingest_s = time.perf_counter() - began
            latencies = await alert_latency(mqtt_port, secrets, pub, args.alerts)
            pub.disconnect()
            pub.loop_stop()
        finally:
            await conn.close()
            await service.stop()
    finally:
        await asyncio.to_thread(stack, "destroy", env, "--yes")
        shutil.rmtree(stack_dir, ignore_errors=True)
    return {
        "benchmark": "ingest",
        "pings": len(messages),
        "devices": args.devices,
        "baseline_broker_only_s": round(base_s, 3),
        "baseline_msgs_per_s": round(len(messages) / base_s),
        "service_ingest_s": round(ingest_s, 3),
        "service_pings_per_s": round(len(messages) / ingest_s),
        "ratio_service_to_broker_time": round(ingest_s / base_s, 2),
        "alert_latency_ms": {
            "n": len(latencies),
            "median": round(statistics.median(latencies) * 1000, 1),
            "p95": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1000, 1),
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "finished_at": datetime.now(UTC).isoformat(),
    }


async def alert_latency(port: int, secrets: dict[str, str], pub: paho.Client, n: int) -> list[float]:
    """Publish → alert received, one truck at a time driving into a restricted fence."""
    fence = next(f for f in load_port("santos").fences if f.kind is FenceKind.RESTRICTED)
    pt = fence.geometry.representative_point()
    arrived: queue.Queue[tuple[str, float]] = queue.Queue()
    sec = client(port, secrets["TRACKER_MQTT_SECURITY_USERNAME"], secrets["TRACKER_MQTT_SECURITY_PASSWORD"])

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        arrived.put((json.loads(m.payload)["device_id"], time.perf_counter()))

    sec.on_message = on_message
    sec.subscribe("alerts/+/high/#", qos=1)
    await asyncio.sleep(0.5)
    out = []
    for i in range(n):
        dev = f"LAT-{i:04d}"
        sent = time.perf_counter()
        body = {"ts": time.time(), "lat": float(pt.y), "lon": float(pt.x)}
        pub.publish(f"trackers/{dev}/ping", json.dumps(body), qos=1)
        while True:
            who, at = await asyncio.to_thread(arrived.get, True, 10)
            if who == dev:
                out.append(at - sent)
                break
    sec.disconnect()
    sec.loop_stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pings", type=int, default=20_000)
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--alerts", type=int, default=40)
    p.add_argument("--out", default=str(REPO / "bench/results/ingest.json"))
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
