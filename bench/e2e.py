"""``bench/throughput.py e2e``: pings/s from MQTT publish to database commit, against ``tracker run``.

One run, one throwaway stack (``deploy/stack.sh infra`` in its own TRACKER_STACK_DIR on free loopback
ports, destroyed afterwards), four phases on the same pre-encoded messages:

1. **broker only**: the load generator against a plain subscriber (QoS 1, a service-role account) that
   counts PUBLISH frames and acknowledges them: what the broker and the generator manage without the
   service. It must be well above the service's figure (≥ 3 ×) for that figure to be the service's;
2. **service**: the same messages with the service (``tracker run``, its own process and broker account)
   subscribed, timed from the first send to the commit of the last row (polled in ``pings``);
3. **backlog drain**: the service is stopped (SIGTERM), a backlog is published into its persistent
   session, and the service is started again; timed from its start, and from its first new row, to the last;
4. **alert latency**: a paced background of ``--background-rate`` pings/s from trucks outside the port, and
   every so often an intruder walking into a restricted Santos fence (an entry needs two fixes inside);
   latency from sending its fixes to the ``geofence_enter`` alert on ``alerts/#``.

The generator writes ready-made MQTT 3.1.1 PUBLISH frames (QoS 1) to raw sockets over several
connections (each a gateway account of its own: the broker makes the account name the client id),
one reader thread per connection counting PUBACKs, so that Python per message is spent before the clock
starts (adapted from the fault scenarios' raw publisher, tests/faults/harness.py). Every device's fixes go
through one connection, in order. Everything is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from shapely.geometry import Point

from geofences import FenceIndex, FenceKind, LocalProjection, load_port
from tracker.adapters.brokeradmin import BrokerAdmin, new_password
from tracker.sim import spots
from tracker.sim.rawmqtt import Packet, count_pubacks, read_packets
from tracker.sim.rawmqtt import string as _string
from tracker.sim.rawmqtt import varint as _varint

REPO = Path(__file__).resolve().parents[1]
SANTOS = REPO / "geofences" / "ports" / "santos.geojson"
OUTSIDE_LAT = -24.30  # ~35 km south of the port: no fence anywhere near
OUTSIDE_LON = -46.20
WALK_STEPS = 10  # an intruder walks the 100 m into its fence at 10 m/s, then stands
MOSQUITTO_CONF = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "mosquitto.conf.in"


def broker_queue_limit(conf: Path = MOSQUITTO_CONF) -> int:
    """``max_queued_messages`` of the broker configuration: beyond it Mosquitto drops QoS 1 messages silently."""
    match = re.search(r"^max_queued_messages\s+(\d+)\s*$", conf.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no max_queued_messages in {conf}")
    return int(match.group(1))


BROKER_QUEUE = broker_queue_limit()
TARGET_BROKER_RATIO = 3.0
Message = tuple[str, bytes]


# ---- MQTT 3.1.1 on a raw socket -----------------------------------------------------------------------


def connect(port: int, user: str, password: str, *, clean: bool = True) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    flags = 0x80 | 0x40 | (0x02 if clean else 0)
    body = _string("MQTT") + bytes([4, flags]) + (0).to_bytes(2, "big") + _string(user) + _string(user)
    body += _string(password)
    sock.sendall(b"\x10" + _varint(len(body)) + body)
    connack = sock.recv(4)
    if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
        raise RuntimeError(f"CONNECT refused for {user}: {connack!r}")
    sock.settimeout(None)
    return sock


def frames_of(messages: Sequence[Message]) -> list[bytes]:
    out = []
    for i, (topic, payload) in enumerate(messages):
        var = _string(topic) + (i % 65535 + 1).to_bytes(2, "big") + payload
        out.append(b"\x32" + _varint(len(var)) + var)
    return out


class RawPublisher:
    """One connection sending pre-encoded QoS 1 frames, at a pace or as fast as the broker takes them."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.sock = connect(port, user, password)
        self.acked = 0
        self.published = 0
        self.finished_at = 0.0
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._thread: threading.Thread | None = None

    def _read(self) -> None:
        def count(_buf: bytes, found: list[Packet]) -> None:
            self.acked += count_pubacks(found)

        read_packets(self.sock, count)

    def _run(self, frames: Sequence[bytes], rate: float | None, start: float) -> None:
        i = 0
        while i < len(frames) and not self._stop.is_set():
            due = len(frames) if not rate else min(len(frames), int((time.perf_counter() - start) * rate) + 1)
            due = min(due, self.acked + 30_000)  # packet ids come round every 65,535: never reuse one in flight
            if due > i:
                self.sock.sendall(b"".join(frames[i:due]))
                self.published = i = due
            else:
                time.sleep(0.002)
        self.finished_at = time.perf_counter()

    def start(self, frames: Sequence[bytes], rate: float | None = None, start: float | None = None) -> None:
        at = time.perf_counter() if start is None else start
        self._thread = threading.Thread(target=self._run, args=(frames, rate, at), daemon=True)
        self._thread.start()

    def send_now(self, frames: Sequence[bytes]) -> float:
        """Send ``frames`` at once from the calling thread; returns when they were handed to the socket."""
        self.sock.sendall(b"".join(frames))
        self.published += len(frames)
        return time.perf_counter()

    def done(self) -> bool:
        return (self._thread is None or not self._thread.is_alive()) and self.acked >= self.published

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")
        self.sock.close()
        self._reader.join(5)


class RawSubscriber:
    """A plain subscriber on ``trackers/+/ping`` (QoS 1, clean session) counting PUBLISH frames and acking them."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.sock = connect(port, user, password)
        self.received = 0
        self.last_at = 0.0
        sub = (1).to_bytes(2, "big") + _string("trackers/+/ping") + b"\x01"
        self.sock.sendall(b"\x82" + _varint(len(sub)) + sub)
        suback = self.sock.recv(5)
        if len(suback) < 5 or suback[0] != 0x90 or suback[4] not in (0, 1):
            raise RuntimeError(f"SUBSCRIBE refused: {suback!r}")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        def ack(buf: bytes, found: list[Packet]) -> None:
            acks = []
            for t, var, _end in found:
                if t >> 4 == 3:
                    self.received += 1
                    if (t >> 1) & 3:
                        tlen = int.from_bytes(buf[var : var + 2], "big")
                        acks.append(b"\x40\x02" + buf[var + 2 + tlen : var + 4 + tlen])
            if acks:
                self.last_at = time.perf_counter()
                with contextlib.suppress(OSError):
                    self.sock.sendall(b"".join(acks))

        read_packets(self.sock, ack, 262144)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")
        self.sock.close()
        self._reader.join(5)


# ---- the traffic ----------------------------------------------------------------------------------------


def truck_fix(prefix: str, d: int, ts: float, k: int) -> Message:
    """Fix ``k`` of truck ``d``: driving east at 10 m/s, one fix a second, outside every Santos fence."""
    body = {"ts": round(ts, 3), "lat": round(OUTSIDE_LAT - d * 1e-4, 7), "lon": round(OUTSIDE_LON + k * 1e-4, 7)}
    body["speed"] = 10.0
    return (f"trackers/{prefix}-{d:05d}/ping", json.dumps(body).encode())


def steps(prefix: str, devices: int, first: int, count: int, t0: float) -> list[list[Message]]:
    """Fixes ``first`` .. ``first + count - 1`` of every device (fix k stamped t0 + k), per device."""
    return [[truck_fix(prefix, d, t0 + k, k) for k in range(first, first + count)] for d in range(devices)]


def split(per_device: Sequence[Sequence[Message]], conns: int) -> list[list[Message]]:
    """Device d goes through connection d % conns; each connection sends step by step (event-time order)."""
    out: list[list[Message]] = [[] for _ in range(conns)]
    longest = max((len(m) for m in per_device), default=0)
    for k in range(longest):
        for d, msgs in enumerate(per_device):
            if k < len(msgs):
                out[d % conns].append(msgs[k])
    return out


def restricted_spots(index: FenceIndex, inset_m: float = 20.0, spacing_m: float = 40.0) -> list[tuple[str, Point]]:
    """Points ``inset_m`` inside Santos's restricted fences, ``spacing_m`` apart, round-robin over the fences
    (tracker/sim/spots.py, as the fault scenarios place their intruders)."""
    return [(fid, Point(*p)) for fid, p in spots.restricted_spots(load_port("santos").fences, inset_m, spacing_m)]


def approach(index: FenceIndex, spot: Point, distance_m: float = 100.0) -> tuple[float, float]:
    """A point ``distance_m`` from ``spot`` in no restricted fence: where the intruder waits."""
    proj = LocalProjection(spot.x, spot.y)
    for k in range(16):
        a = 2 * math.pi * k / 16
        lon, lat = proj.to_lonlat(distance_m * math.cos(a), distance_m * math.sin(a))
        inside = index.fences_at([float(lon)], [float(lat)])[0]
        if not any(index.get(f).kind is FenceKind.RESTRICTED for f in inside):
            return float(lon), float(lat)
    raise RuntimeError(f"no approach point outside the restricted fence around {spot}")


@dataclass(frozen=True)
class Intruder:
    device: str
    fence: str
    wait: tuple[float, float]
    spot: tuple[float, float]

    def fix(self, ts: float, where: tuple[float, float], speed: float) -> Message:
        body = {"ts": round(ts, 3), "lat": round(where[1], 7), "lon": round(where[0], 7), "speed": speed}
        return (f"trackers/{self.device}/ping", json.dumps(body).encode())

    def walk_in(self, now: float) -> list[Message]:
        """The walk from where it waits to its spot (one fix a second, ending at ``now``), then two fixes
        standing there: the entry is confirmed by the second fix inside at the latest."""
        n = WALK_STEPS + 2
        out = []
        for m in range(1, n + 1):
            f = min(1.0, m / WALK_STEPS)
            where = (self.wait[0] + f * (self.spot[0] - self.wait[0]), self.wait[1] + f * (self.spot[1] - self.wait[1]))
            out.append(self.fix(now - n + m, where, 10.0 if f < 1 else 0.0))
        return out


def intruders(prefix: str, n: int) -> list[Intruder]:
    index = FenceIndex(load_port("santos").fences, hysteresis_m=25.0, entry_margin_m=10.0)
    spots = restricted_spots(index)
    if not spots:
        raise RuntimeError("no restricted fence in Santos to walk into")
    out = []
    for j in range(n):
        fid, spot = spots[j % len(spots)]
        out.append(Intruder(f"{prefix}-{j:05d}", fid, approach(index, spot), (spot.x, spot.y)))
    return out


# ---- the stack and the service ---------------------------------------------------------------------------


def parse_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack(command: str, env: dict[str, str], *extra: str) -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "deploy/stack.sh"), command, *extra],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"deploy/stack.sh {command} failed\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def service_env(secrets: dict[str, str], acc: Accounts, dsn: str, mqtt_port: int) -> dict[str, str]:
    """The service's environment on a throwaway stack: its own broker account, the database as the service
    role, Santos' fences, unknown devices registered; no owner or broker-admin secret reaches it."""
    env = {
        k: v
        for k, v in secrets.items()
        if k.startswith("TRACKER_") and "PG_" not in k and not k.startswith("TRACKER_MQTT_ADMIN_")
    }
    env.update(
        TRACKER_MQTT_USERNAME=acc.service[0], TRACKER_MQTT_PASSWORD=acc.service[1], TRACKER_DB_DSN=dsn,
        TRACKER_MQTT_HOST="127.0.0.1", TRACKER_MQTT_PORT=str(mqtt_port), TRACKER_HTTP_HOST="127.0.0.1",
        TRACKER_HTTP_PORT=str(free_port()), TRACKER_FENCE_FILES=str(SANTOS), TRACKER_UNKNOWN_DEVICES="register",
    )  # fmt: skip
    return env


class Service:
    """``tracker run`` in a process of its own, as deployed (the broker and database are the stack's)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = int(env["TRACKER_HTTP_PORT"])

    def start(self) -> None:
        exe = Path(sys.executable).with_name("tracker")
        cmd = [str(exe), "run"] if exe.exists() else [sys.executable, "-m", "tracker", "run"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
        env.update(self.env)
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh)

    def ready(self, draining: bool = False) -> bool:
        """/readyz says 200; ``draining``: its database and broker checks pass (its ingest check says "behind"
        while a backlog of old fixes is being drained, which is what is measured then)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except urllib.error.HTTPError as exc:
            if not draining:
                return False
            try:
                checks = json.loads(exc.read()).get("checks", {})
            except (ValueError, AttributeError):
                return False
            return bool(checks.get("database") is True and checks.get("broker") is True)
        except (urllib.error.URLError, OSError):
            return False

    async def wait_ready(self, timeout: float = 60.0, draining: bool = False) -> float:
        began = time.perf_counter()
        while not await asyncio.to_thread(self.ready, draining):
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"the service exited\n{self.tail()}")
            if time.perf_counter() - began > timeout:
                raise RuntimeError(f"/readyz not 200 within {timeout} s\n{self.tail()}")
            await asyncio.sleep(0.1)
        return time.perf_counter() - began

    def cpu_s(self) -> float | None:
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


# ---- measuring -------------------------------------------------------------------------------------------


async def wait_for(cond: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> float:
    """Poll the (async) ``cond`` until true; perf_counter at which it was first seen true."""
    deadline = time.perf_counter() + timeout
    while True:
        res = cond()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(poll)


@dataclass
class Accounts:
    gateways: list[tuple[str, str]]
    service: tuple[str, str]
    reader: tuple[str, str]  # service role: the broker-only subscriber
    security: tuple[str, str]


def make_accounts(port: int, secrets: dict[str, str], conns: int) -> Accounts:
    """Broker accounts of this run's own (the broker uses the account name as client id: one connection each)."""

    def new(admin: BrokerAdmin, role: str) -> tuple[str, str]:
        user, password = f"bench-{role}-{uuid.uuid4().hex[:8]}", new_password()
        admin.create_client(user, password, [role])
        return user, password

    with BrokerAdmin(
        "127.0.0.1", port, secrets["TRACKER_MQTT_ADMIN_USERNAME"], secrets["TRACKER_MQTT_ADMIN_PASSWORD"]
    ) as admin:
        return Accounts(
            [new(admin, "gateway") for _ in range(conns + 1)], new(admin, "service"), new(admin, "service"),
            new(admin, "security"),
        )  # fmt: skip


async def publish(port: int, gateways: Sequence[tuple[str, str]], per_conn: Sequence[Sequence[Message]],
                  rate: float | None = None, start: float | None = None) -> list[RawPublisher]:  # fmt: skip
    """Start one raw publisher per non-empty share (frames encoded before the clock starts)."""
    frames = [frames_of(m) for m in per_conn]
    pubs = [RawPublisher(port, u, p) for (u, p), f in zip(gateways, frames, strict=False) if f]
    share = None if rate is None else rate / len(pubs)
    at = time.perf_counter() if start is None else start
    for pub, f in zip(pubs, frames, strict=False):
        pub.start(f, share, at)
    return pubs


async def broker_only(
    port: int, acc: Accounts, per_conn: Sequence[Sequence[Message]], timeout: float
) -> dict[str, Any]:
    total = sum(len(m) for m in per_conn)
    sub = RawSubscriber(port, *acc.reader)
    frames = [frames_of(m) for m in per_conn]
    pubs = [RawPublisher(port, u, p) for (u, p), f in zip(acc.gateways, frames, strict=False) if f]
    try:
        t0 = time.perf_counter()
        for pub, f in zip(pubs, frames, strict=False):
            pub.start(f)
        await wait_for(lambda: sub.received >= total, timeout, "the broker-only subscriber", 0.01)
        took = sub.last_at - t0
        acked = max(p.finished_at for p in pubs) - t0
    finally:
        for pub in pubs:
            pub.close()
        sub.close()
    return {
        "messages": total,
        "connections": len(pubs),
        "received": sub.received,
        "seconds": round(took, 3),
        "msgs_per_s": round(total / took),
        "all_sent_s": round(acked, 3),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stack_dir = Path(tempfile.mkdtemp(prefix="st-bench-", dir="/tmp"))
    os.chmod(stack_dir, 0o755)  # noqa: S103 - the postgres and mosquitto users must reach it when run as root
    mqtt_port, pg_port = args.mqtt_port or free_port(), args.pg_port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(TRACKER_STACK_DIR=str(stack_dir), TRACKER_MQTT_PORT=str(mqtt_port), TRACKER_PG_PORT=str(pg_port))
    t_stack = time.perf_counter()
    await asyncio.to_thread(stack, "infra", env)
    svc: Service | None = None
    try:
        secrets = parse_env(stack_dir / "secrets.env")
        owner = parse_env(stack_dir / "owner.env")["TRACKER_DB_OWNER_DSN"]
        dsn = secrets["TRACKER_DB_DSN"]
        mig = {**env, "TRACKER_DB_DSN": dsn, "TRACKER_DB_OWNER_DSN": owner}  # as the schema owner, like stack.sh up
        proc = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "tracker", "migrate"], env=mig, cwd=REPO, capture_output=True,
            text=True, timeout=300, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"tracker migrate failed\n{proc.stdout}\n{proc.stderr}")
        acc = await asyncio.to_thread(make_accounts, mqtt_port, secrets, args.connections)
        stack_s = time.perf_counter() - t_stack
        svc_env = service_env(secrets, acc, dsn, mqtt_port)
        svc = Service(svc_env, stack_dir / "service.log")
        return await phases(args, mqtt_port, dsn, acc, svc, stack_s)
    except BaseException:
        if svc is not None:
            print(svc.tail(), file=sys.stderr)
        raise
    finally:
        if svc is not None:
            await svc.stop()
        await asyncio.to_thread(stack, "destroy", env, "--yes")
        shutil.rmtree(stack_dir, ignore_errors=True)


async def phases(
    args: argparse.Namespace, port: int, dsn: str, acc: Accounts, svc: Service, stack_s: float
) -> dict[str, Any]:
    n_dev, n_steps, n_back_steps, conns = args.devices, args.steps, args.backlog_steps, args.connections
    if n_dev * n_back_steps > BROKER_QUEUE:
        raise SystemExit(f"a backlog of {n_dev * n_back_steps} exceeds the broker's queue of {BROKER_QUEUE} per client")
    gw = acc.gateways[:conns]
    now = time.time()
    t0 = now - (n_steps + n_back_steps + 1) - 120  # every fix of phases 1-3 in the past, one second apart per device
    warm = split(steps("BEN", n_dev, 0, 1, t0), conns)
    main = split(steps("BEN", n_dev, 1, n_steps, t0), conns)
    backlog = split(steps("BEN", n_dev, 1 + n_steps, n_back_steps, t0), conns)
    n_main, n_back = n_dev * n_steps, n_dev * n_back_steps
    timeout = args.timeout
    if set(args.phases) == {"latency"}:
        return await latency_only(args, port, dsn, acc, svc, stack_s)

    # 1. broker only, before the service ever subscribes (no session of its own collects these yet)
    base = await broker_only(port, acc, main, timeout)
    print(f"broker only: {base['msgs_per_s']:,} msgs/s ({base['messages']:,} in {base['seconds']} s)", flush=True)

    db = await asyncpg.connect(dsn)
    try:

        async def count(like: str) -> int:
            return int(await db.fetchval("SELECT count(*) FROM pings WHERE device_id LIKE $1", like))

        # 2. service throughput, devices registered by a warm-up fix each first
        svc.start()
        ready_s = await svc.wait_ready()
        for p in await publish(port, gw, warm):
            await wait_for(p.done, timeout, "warm-up acks")
            p.close()
        await wait_for(lambda: _ge(count("BEN-%"), n_dev), timeout, "warm-up rows", 0.2)
        cpu0 = svc.cpu_s()
        began = time.perf_counter()
        pubs = await publish(port, gw, main)
        end = await wait_for(lambda: _ge(count("BEN-%"), n_dev + n_main), timeout, "the service's rows", 0.1)
        sent = max(p.finished_at for p in pubs) - began
        cpu1 = svc.cpu_s()
        for p in pubs:
            p.close()
        took = end - began
        service = {
            "pings": n_main,
            "devices": n_dev,
            "connections": len(pubs),
            "seconds": round(took, 3),
            "pings_per_s": round(n_main / took),
            "all_sent_s": round(sent, 3),
            "service_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2),
            "ready_after_start_s": round(ready_s, 2),
        }
        print(f"service: {service['pings_per_s']:,} pings/s ({n_main:,} in {took:.2f} s)", flush=True)

        # 3. backlog in the persistent session while the service is down, then drained
        await svc.stop()
        pubs = await publish(port, gw, backlog)
        for p in pubs:
            await wait_for(p.done, timeout, "backlog acks")
            p.close()
        before = await count("BEN-%")
        started = time.perf_counter()
        svc.start()
        first = await wait_for(lambda: _gt(count("BEN-%"), before), timeout, "the first drained row", 0.05)
        at_first = await count("BEN-%")
        last = await wait_for(lambda: _ge(count("BEN-%"), n_dev + n_main + n_back), timeout, "the drained backlog", 0.1)
        drain = {
            "backlog_pings": n_back,
            "pings_stored_before_restart": before - n_dev - n_main,
            "from_service_start_s": round(last - started, 3),
            "pings_per_s_from_service_start": round(n_back / (last - started)),
            "first_row_after_start_s": round(first - started, 3),
            "pings_per_s_after_first_row": round((n_dev + n_main + n_back - at_first) / max(1e-9, last - first)),
        }
        await svc.wait_ready(draining=True)
        print(f"backlog: {drain['pings_per_s_after_first_row']:,} pings/s after the first row", flush=True)

        # 4. alert latency under a paced background
        latency = {} if args.no_latency else await alert_latency(args, port, acc, svc, count)
    finally:
        await db.close()
    ratio = base["msgs_per_s"] / service["pings_per_s"]
    return {
        "traffic": f"{n_dev} trucks outside every Santos fence, one fix a second each (event time), QoS 1, device d on "
        f"connection d % {conns}; warm-up fix per device before the clock; service as `tracker run` with "
        "TRACKER_UNKNOWN_DEVICES=register and the Santos fences, its own broker account and persistent session",
        "stack_setup_s": round(stack_s, 1),
        "broker_only": base,
        "service": service,
        "backlog_drain": drain,
        "alert_latency": latency,
        "e2e_pings_per_s": service["pings_per_s"],
        "broker_only_msgs_per_s": base["msgs_per_s"],
        "broker_to_service_ratio": round(ratio, 2),
        "generator_not_the_limit": ratio >= TARGET_BROKER_RATIO,
        "drain_pings_per_s": drain["pings_per_s_after_first_row"],
        "p99_alert_latency_ms": latency.get("p99_ms"),
    }


async def latency_only(
    args: argparse.Namespace, port: int, dsn: str, acc: Accounts, svc: Service, stack_s: float
) -> dict[str, Any]:
    """``--phases latency``: the alert-latency phase alone, against a freshly started service."""
    db = await asyncpg.connect(dsn)
    try:

        async def count(like: str) -> int:
            return int(await db.fetchval("SELECT count(*) FROM pings WHERE device_id LIKE $1", like))

        svc.start()
        await svc.wait_ready()
        latency = await alert_latency(args, port, acc, svc, count)
    finally:
        await db.close()
    return {"stack_setup_s": round(stack_s, 1), "alert_latency": latency, "p99_alert_latency_ms": latency.get("p99_ms")}


async def _ge(c: Any, n: int) -> bool:
    return int(await c) >= n


async def _gt(c: Any, n: int) -> bool:
    return int(await c) > n


def _pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]


async def alert_latency(
    args: argparse.Namespace, port: int, acc: Accounts, svc: Service, count: Callable[[str], Any]
) -> dict[str, Any]:
    rate, dur, n_alerts, conns = args.background_rate, args.background_s, args.alerts, args.connections
    bg_devices = max(1, round(rate))  # one fix a second each, as real trucks report
    crowd = intruders("INT", n_alerts)
    fence_of = {i.device: i.fence for i in crowd}
    arrived: dict[str, float] = {}
    lock = threading.Lock()
    desk = paho.Client(CallbackAPIVersion.VERSION2, client_id=acc.security[0], protocol=paho.MQTTv311)
    desk.username_pw_set(*acc.security)

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        at = time.perf_counter()
        try:
            body = json.loads(m.payload)
        except ValueError:
            return
        if isinstance(body, dict) and body.get("event") == "raised" and body.get("kind") == "geofence_enter":
            dev = str(body.get("device_id"))
            if fence_of.get(dev) == body.get("fence_id"):  # its restricted fence, not the port it stood in already
                with lock:
                    arrived.setdefault(dev, at)

    subscribed = threading.Event()
    # the desk's thread timestamps an alert once it holds the GIL, which this process shares with the generator's
    # threads: at the default 5 ms switch interval that wait alone was of the order of the 25 ms target
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    desk.on_message = on_message
    desk.on_subscribe = lambda *a: subscribed.set()
    desk.connect("127.0.0.1", port)
    desk.loop_start()
    desk.subscribe("alerts/#", qos=1)
    if not await asyncio.to_thread(subscribed.wait, 10):
        raise RuntimeError("the security desk could not subscribe to alerts/#")
    try:
        # warm-up: every background truck and intruder registered, one fix each, before the clock
        w0 = time.time() - 30
        warm = [truck_fix("BG", d, w0, 0) for d in range(bg_devices)]
        warm += [i.fix(w0, i.wait, 0.0) for i in crowd]
        for p in await publish(port, acc.gateways[:conns], split([[m] for m in warm], conns)):
            await wait_for(p.done, args.timeout, "warm-up acks")
            p.close()
        await wait_for(lambda: _ge(count("BG-%"), bg_devices), args.timeout, "background warm-up rows", 0.2)
        await wait_for(lambda: _ge(count("INT-%"), len(crowd)), args.timeout, "intruder warm-up rows", 0.2)
        total = int(rate * dur)
        start_wall = time.time() + 0.5
        per_dev: list[list[Message]] = [[] for _ in range(bg_devices)]
        for i in range(total):
            d, k = i % bg_devices, 1 + i // bg_devices
            per_dev[d].append(truck_fix("BG", d, start_wall + i / rate, k))
        per_conn = split(per_dev, conns)
        frames = [frames_of(m) for m in per_conn]
        pubs = [RawPublisher(port, u, p) for (u, p), f in zip(acc.gateways[:conns], frames, strict=False) if f]
        spy = RawPublisher(port, *acc.gateways[conns])
        stored0 = await count("BG-%")
        t_start = time.perf_counter() + (start_wall - time.time())
        for pub, f in zip(pubs, frames, strict=False):
            pub.start(f, rate / len(pubs), t_start)
        await asyncio.sleep(max(0.0, t_start - time.perf_counter()) + 1.0)
        sent: dict[str, float] = {}
        gap = max(0.05, (dur - 2.0) / max(1, n_alerts))
        for intr in crowd:
            sent[intr.device] = spy.send_now(frames_of(intr.walk_in(time.time())))
            await asyncio.sleep(gap)
        await wait_for(lambda: all(p.done() for p in pubs), args.timeout, "the background's acks", 0.1)
        bg_sent_end = time.perf_counter()
        bg_total = stored0 + total
        caught_up = await wait_for(lambda: _ge(count("BG-%"), bg_total), args.timeout, "the background rows", 0.1)
        with contextlib.suppress(RuntimeError):
            await wait_for(lambda: len(arrived) >= len(crowd), 15, "the alerts")
        offered = total / (max(p.finished_at for p in pubs) - t_start)
        for p in [*pubs, spy]:
            p.close()
    finally:
        desk.disconnect()
        desk.loop_stop()
        sys.setswitchinterval(switch)
    with lock:
        lat = [(arrived[d] - s) * 1000 for d, s in sent.items() if d in arrived]
    lag_s = caught_up - bg_sent_end
    out: dict[str, Any] = {
        "background_pings": total,
        "background_devices": bg_devices,
        "background_rate_target": rate,
        "background_rate_offered": round(offered),
        "background_rows_stored_within_s_of_last_send": round(lag_s, 2),
        "service_kept_up": lag_s < 2.0,
        "intruders": len(crowd),
        "alerts_received": len(lat),
        "latency_from": "send of the intruder's fixes (the walk in and two fixes standing inside, sent at once) to "
        "receipt of its geofence_enter alert on alerts/# by a security account (QoS 1)",
    }
    if lat:
        out.update(
            median_ms=round(statistics.median(lat), 1),
            p95_ms=round(_pct(lat, 0.95), 1),
            p99_ms=round(_pct(lat, 0.99), 1),
            max_ms=round(max(lat), 1),
        )
    print(
        f"alert latency: {out.get('p99_ms')} ms p99 over {len(lat)} of {len(crowd)}, kept up {out['service_kept_up']}"
    )
    return out


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=300, help="trucks in the throughput and backlog phases")
    p.add_argument("--steps", type=int, default=100, help="fixes per truck in the throughput phase")
    p.add_argument("--backlog-steps", type=int, default=100, help="fixes per truck queued while the service is down")
    p.add_argument("--connections", type=int, default=4, help="publishing connections (gateway accounts)")
    p.add_argument("--background-rate", type=float, default=5000.0, help="pings/s behind the alert latency")
    p.add_argument("--background-s", type=float, default=20.0)
    p.add_argument("--alerts", type=int, default=100, help="intruders walking into restricted fences")
    p.add_argument("--no-latency", action="store_true", help="skip the alert latency phase (throughput A/B runs)")
    p.add_argument("--timeout", type=float, default=300.0, help="bound of every wait, s")
    p.add_argument(
        "--phases",
        nargs="+",
        choices=("all", "latency"),
        default=["all"],
        help="'latency': only the alert-latency phase (phase 4), on a fresh stack",
    )
    p.add_argument("--mqtt-port", type=int, default=0, help="0: a free loopback port")
    p.add_argument("--pg-port", type=int, default=0, help="0: a free loopback port")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "throughput.json")


__all__ = ["add_args", "run"]
