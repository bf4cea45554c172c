"""Replay a scenario over a real MQTT broker, as the trackers and the customs system would send it.

Messages go out in the scenario's delivery order (duplicates and late messages included), paced by
their delivery time divided by ``speedup``; ``speedup=None`` sends as fast as the broker acknowledges.
A run is bounded in messages and wall time, and refuses non-loopback brokers unless told otherwise,
so a stray command cannot flood a production broker with fake trucks.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tracker.sim.scenario import Scenario, inspection_json, ping_payload

INSPECTION_TOPIC = "customs/inspections"


@dataclass(frozen=True, slots=True)
class PublishLimits:
    max_messages: int = 5_000_000
    max_seconds: float = 3600.0
    allow_remote: bool = False


def is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def messages(scenario: Scenario) -> Iterator[tuple[datetime, str, bytes]]:
    """(delivery time, topic, payload) in delivery order; a customs decision is delivered when made."""
    inspections = sorted(scenario.inspections, key=lambda i: i.ts)
    k = 0
    for p in scenario.pings:
        when = p.received or p.ts
        while k < len(inspections) and inspections[k].ts <= when:
            ins = inspections[k]
            yield ins.ts, INSPECTION_TOPIC, json.dumps(inspection_json(ins)).encode()
            k += 1
        yield when, f"trackers/{p.device_id}/ping", json.dumps(ping_payload(p)).encode()
    for ins in inspections[k:]:
        yield ins.ts, INSPECTION_TOPIC, json.dumps(inspection_json(ins)).encode()


def publish(
    scenario: Scenario,
    host: str = "127.0.0.1",
    port: int = 1883,
    username: str = "",
    password: str = "",
    speedup: float | None = 60.0,
    limits: PublishLimits = PublishLimits(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Publish with QoS 1 and return how many messages the broker acknowledged."""
    if not limits.allow_remote and not is_loopback(host):
        raise ValueError(f"{host!r} is not a loopback address; pass allow_remote to publish elsewhere")
    if speedup is not None and speedup <= 0:
        raise ValueError("speedup must be positive")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"port-sim-{scenario.seed}", clean_session=True)
    if username:
        client.username_pw_set(username, password or None)
    client.max_inflight_messages_set(100)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    sent = 0
    began = clock()
    first: datetime | None = None
    pending: list[paho.MQTTMessageInfo] = []
    try:
        for when, topic, payload in messages(scenario):
            if sent >= limits.max_messages or clock() - began > limits.max_seconds:
                break
            if speedup is not None:
                first = first or when
                due = began + (when - first).total_seconds() / speedup
                wait = due - clock()
                if wait > 0:
                    sleep(min(wait, max(0.0, limits.max_seconds - (clock() - began))))
            pending.append(client.publish(topic, payload, qos=1))
            sent += 1
            if len(pending) >= 1000:
                for info in pending:
                    info.wait_for_publish(timeout=30.0)
                pending.clear()
        for info in pending:
            info.wait_for_publish(timeout=30.0)
    finally:
        client.loop_stop()
        client.disconnect()
    return sent
