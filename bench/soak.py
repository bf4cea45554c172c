"""Flat memory under steady load: ``tracker run`` fed a fixed population for ``--minutes``, its RSS sampled.

One command, one throwaway stack like ``bench/throughput.py e2e`` (``deploy/stack.sh infra`` in its own
TRACKER_STACK_DIR on free loopback ports, migrated as the owner, destroyed afterwards), the real service in
a process of its own. ``--devices`` devices (default 2,000) report at ``--rate`` pings/s in all (default
500, one fix per device every 4 s), stamped with the wall clock as a live fleet would be: three in four
stand or creep at their own spot inside a Santos fence, one in four drives a circle of 40-160 m around
theirs at 4-8 m/s, crossing fence edges (entries, exits, trips and their alerts go on all the time). The
population never changes, so whatever the service keeps per device is bounded by it; memory that still
grows once the states are full grows with the pings, which is a leak.

Every ``--sample-s`` seconds (15) it reads the service's VmRSS and VmData from /proc, the pings and
alerts committed so far, the stored states' size (``device_state``) and the service's CPU time. Verdict:
the least-squares slope of RSS over the last ``--judge-minutes`` (8 of the default 18) against
``--max-slope-kib-min``, and not before the fleet's states are full: every device has sent
``--warmup-fixes`` (40) fixes (the reorder window, the dark rule's intervals, stop states fill fix by fix)
and ``--warmup-minutes`` (10) have passed (what fills by the clock: the rendezvous rule files a meeting,
its alert kept whole, for neighbours standing together 5 min; at 500 pings/s that is a ~9 MiB step at
~5.2 min, which the old judged window, from 2.7 min of 10, took for a slope). Verdicts: ``pass``;
``filling`` (over the target, but no more than the stored states' own growth in the window accounts for,
at the RSS-per-stored-KiB ratio of the warm-up: bounded by design, e.g. the open trips of the circling
quarter gaining fence visits and alert ids up to ``TripParams.max_items``); ``leak`` (more than that);
``behind`` (the backlog grew or stood above two samples' worth: RSS then holds in-flight work, no verdict).
``--in-process`` replays the same traffic through the service's core path without broker or database on a
simulated clock (what grows there is the core's and the codec's, not the adapters'); ``--tracemalloc DIR``
turns on the service's memory tracing (deploy/README.md; its RSS is then no measure).

The threshold, 256 KiB/min: anything the service kept per ping would cost at least a pointer in a
container and the smallest object it points to (~36 bytes), i.e. >= 1 MiB/min at 500 pings/s, four times
the threshold; per-device structures are bounded by the population and in place before the judged
window starts; what is left is the allocator's own noise (arenas kept, freed in steps), which on this
machine stays well below it over minutes. Bounded: --minutes of sending (at most ``rate x minutes x 60``
messages), loopback only; the stack is destroyed whatever happens.

Writes ``bench/results/soak.json`` and ``bench/results/soak.png`` (matplotlib, the benchmarks' optional
dependency; skipped without it). ``--minutes 1`` is a smoke run (judged on its last half).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

if __package__ in (None, ""):  # run as a script: the repository root holds the bench package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.e2e import (
    SANTOS,
    RawPublisher,
    Service,
    free_port,
    make_accounts,
    parse_env,
    service_env,
    stack,
)
from bench.hotpath import spots
from tracker.sim.rawmqtt import string as _string
from tracker.sim.rawmqtt import varint as _varint

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "soak.json"
PLOT = REPO / "bench" / "results" / "soak.png"
INPROCESS = REPO / "bench" / "results" / "soak_inprocess.json"
METRES_PER_DEG = 111_320.0
MAX_SLOPE_KIB_MIN = 256.0


def git_commit() -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "unknown"


class Fleet:
    """Where each device is at a moment: a fixed spot, and for one in four a circle around it."""

    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        self.ids = [f"SOAK-{d:05d}" for d in range(n)]
        self.centre = spots(seed, n)
        self.radius = [rng.uniform(40.0, 160.0) if d % 4 == 0 else rng.uniform(0.5, 3.0) for d in range(n)]
        speed = [rng.uniform(4.0, 8.0) if d % 4 == 0 else 0.02 for d in range(n)]
        self.omega = [v / r for v, r in zip(speed, self.radius, strict=True)]
        self.speed = speed
        self.phase = [rng.uniform(0.0, 2 * math.pi) for _ in range(n)]

    def fix(self, d: int, ts: float) -> tuple[str, bytes]:
        lon0, lat0 = self.centre[d]
        a = self.phase[d] + self.omega[d] * ts
        east, north = self.radius[d] * math.cos(a), self.radius[d] * math.sin(a)
        lat = lat0 + north / METRES_PER_DEG
        lon = lon0 + east / (METRES_PER_DEG * math.cos(math.radians(lat0)))
        body = {"ts": round(ts, 3), "lat": round(lat, 7), "lon": round(lon, 7), "speed": round(self.speed[d], 2)}
        return f"trackers/{self.ids[d]}/ping", json.dumps(body).encode()


class Sender:
    """A paced QoS 1 publisher over a few connections: message j is device j % n's next fix, stamped now."""

    def __init__(self, port: int, gateways: Sequence[tuple[str, str]], fleet: Fleet, rate: float, limit: int) -> None:
        self.pubs = [RawPublisher(port, u, p) for u, p in gateways]
        self.fleet = fleet
        self.rate = rate
        self.limit = limit
        self.sent = 0
        self._ids = [0] * len(self.pubs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _frame(self, conn: int, topic: str, payload: bytes) -> bytes:
        self._ids[conn] = self._ids[conn] % 65535 + 1
        var = _string(topic) + self._ids[conn].to_bytes(2, "big") + payload
        return b"\x32" + _varint(len(var)) + var

    def _run(self) -> None:
        n = len(self.fleet.ids)
        start = time.perf_counter()
        while not self._stop.is_set() and self.sent < self.limit:
            due = min(self.limit, int((time.perf_counter() - start) * self.rate))
            # never more than 30,000 unacknowledged per connection: packet ids come round every 65,535
            due = min(due, min(p.acked for p in self.pubs) * len(self.pubs) + 30_000)
            if due <= self.sent:
                time.sleep(0.01)
                continue
            now = time.time()
            out: list[list[bytes]] = [[] for _ in self.pubs]
            for j in range(self.sent, due):
                d = j % n
                conn = d % len(self.pubs)  # one device, one connection: its fixes stay in order
                out[conn].append(self._frame(conn, *self.fleet.fix(d, now)))
            for pub, frames in zip(self.pubs, out, strict=True):
                if frames:
                    pub.send_now(frames)
            self.sent = due

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for pub in self.pubs:
            pub.close()

    @property
    def acked(self) -> int:
        return sum(p.acked for p in self.pubs)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM and VmData of a process, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "VmData"):
            out[key] = int(value.split()[0])
    return out


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y against x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    stack_dir = Path(tempfile.mkdtemp(prefix="st-soak-", dir="/tmp"))
    os.chmod(stack_dir, 0o755)  # noqa: S103 - the postgres and mosquitto users must reach it when run as root
    mqtt_port, pg_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(TRACKER_STACK_DIR=str(stack_dir), TRACKER_MQTT_PORT=str(mqtt_port), TRACKER_PG_PORT=str(pg_port))
    await asyncio.to_thread(stack, "infra", env)
    svc: Service | None = None
    sender: Sender | None = None
    try:
        secrets = parse_env(stack_dir / "secrets.env")
        owner = parse_env(stack_dir / "owner.env")["TRACKER_DB_OWNER_DSN"]
        dsn = secrets["TRACKER_DB_DSN"]
        mig = {**env, "TRACKER_DB_DSN": dsn, "TRACKER_DB_OWNER_DSN": owner}
        proc = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "tracker", "migrate"], env=mig, cwd=REPO, capture_output=True,
            text=True, timeout=300, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"tracker migrate failed\n{proc.stdout}\n{proc.stderr}")
        acc = await asyncio.to_thread(make_accounts, mqtt_port, secrets, args.connections)
        svc_env = service_env(secrets, acc, dsn, mqtt_port)
        if args.tracemalloc is not None:  # diagnosis only: tracing slows the service, its RSS is not judged
            svc_env.update(
                TRACKER_TRACEMALLOC=str(args.tracemalloc.resolve()),
                TRACKER_TRACEMALLOC_EVERY_S=str(args.trace_every_s),
                TRACKER_TRACEMALLOC_FRAMES=str(args.trace_frames),
            )
        svc = Service(svc_env, stack_dir / "service.log")
        svc.start()
        await svc.wait_ready(120)
        assert svc.proc is not None
        pid = svc.proc.pid
        fleet = Fleet(args.devices, args.seed)
        limit = int(args.rate * args.minutes * 60)
        sender = Sender(mqtt_port, acc.gateways[: args.connections], fleet, args.rate, limit)
        db = await asyncpg.connect(dsn)
        samples: list[dict[str, Any]] = []
        try:
            t0 = time.perf_counter()
            sender.start()
            end = t0 + args.minutes * 60
            next_at = t0
            while True:
                now = time.perf_counter()
                if now >= next_at:
                    st = proc_status(pid)
                    pings = await db.fetchval("SELECT count(*) FROM pings")
                    alerts = await db.fetchval("SELECT count(*) FROM alerts")
                    # what the fleet's states weigh as stored: still growing = states still filling (by design)
                    state_b = await db.fetchval("SELECT coalesce(sum(length(state)), 0) FROM device_state")
                    sample = {
                        "t_s": round(now - t0, 1),
                        "rss_kib": st["VmRSS"],
                        "data_kib": st["VmData"],
                        "sent": sender.sent,
                        "acked": sender.acked,
                        "pings_stored": pings,
                        "alerts": alerts,
                        "state_kib": round(state_b / 1024, 1),
                        "service_cpu_s": svc.cpu_s(),
                    }
                    samples.append(sample)
                    print(
                        f"{sample['t_s']:7.1f} s  RSS {st['VmRSS'] / 1024:7.1f} MiB  sent {sender.sent:,}  "
                        f"stored {pings:,}  alerts {alerts:,}",
                        flush=True,
                    )
                    next_at += args.sample_s
                if now >= end or svc.proc.poll() is not None:
                    break
                await asyncio.sleep(min(1.0, max(0.05, next_at - now), max(0.05, end - now)))
            sender.stop()
            # let the service write what is queued, then one last sample
            await asyncio.sleep(5)
            hwm = proc_status(pid)["VmHWM"] if svc.proc.poll() is None else None
            stored = await db.fetchval("SELECT count(*) FROM pings")
            alive = svc.proc.poll() is None
        finally:
            await db.close()
        return summarise(args, samples, sender, stored, hwm, alive, svc)
    except BaseException:
        if svc is not None:
            print(svc.tail(), file=sys.stderr)
        raise
    finally:
        if sender is not None:
            sender.stop()
        if svc is not None:
            await svc.stop()
        await asyncio.to_thread(stack, "destroy", env, "--yes")
        shutil.rmtree(stack_dir, ignore_errors=True)


def warmup_s(args: argparse.Namespace) -> float:
    """When the fleet's states are full: after ``--warmup-fixes`` fixes per device (windows, intervals and
    stop states fill fix by fix) and after ``--warmup-minutes`` (what fills by the clock: the rendezvous
    rule files a meeting, alert included, for neighbours standing together 5 min and keeps closed ones
    10 min; measured with ``--in-process``, the core's memory steps up at ~6 and ~9 minutes, then stays)."""
    return float(max(args.warmup_fixes * args.devices / args.rate, args.warmup_minutes * 60))


def judge(
    alive: bool, points: int, kib_min: float, kept_up: bool, filling_kib_min: float | None, max_slope: float
) -> tuple[str, str]:
    """pass, or why not: the service died or fell behind (no verdict on memory then), its states were still
    filling in the judged window (growth bounded by design, the warm-up was too short), or a leak."""
    if not alive:
        return "died", "the service exited during the soak"
    if points < 3:
        return "too short", "fewer than 3 samples in the judged window"
    if not kept_up:
        return "behind", "the service fell behind: RSS then also holds in-flight work, so no verdict on memory"
    if kib_min <= max_slope:
        return "pass", f"RSS slope {kib_min:.0f} KiB/min <= {max_slope:g} after the fleet's states filled"
    if filling_kib_min is None:
        return "fail", f"RSS slope {kib_min:.0f} KiB/min; warm-up too short to tell states filling from a leak"
    if kib_min - max_slope <= filling_kib_min:
        return "filling", (
            f"RSS slope {kib_min:.0f} KiB/min, no more than the stored states' own growth accounts for "
            f"(~{filling_kib_min:.0f} KiB/min in memory at the warm-up's ratio): states still filling towards "
            "their bounds (fail: the target holds only once they are full)"
        )
    return "leak", (
        f"RSS slope {kib_min:.0f} KiB/min, more than the stored states' growth accounts for "
        f"(~{filling_kib_min:.0f} KiB/min): memory grows with the pings"
    )


def summarise(
    args: argparse.Namespace,
    samples: list[dict[str, Any]],
    sender: Sender,
    stored: int,
    hwm: int | None,
    alive: bool,
    svc: Service,
) -> dict[str, Any]:
    total_s = args.minutes * 60
    judged_from = max(total_s - args.judge_minutes * 60, min(warmup_s(args), total_s / 2))
    window = [(s["t_s"] / 60, s["rss_kib"]) for s in samples if s["t_s"] >= judged_from]
    kib_min = slope(window)
    first = samples[0] if samples else {}
    last = samples[-1] if samples else {}
    span = (last.get("t_s", 0) - first.get("t_s", 0)) or 1.0
    rate_stored = (last.get("pings_stored", 0) - first.get("pings_stored", 0)) / span
    judged = [s for s in samples if s["t_s"] >= judged_from]
    # the backlog (sent, not yet stored) waits in the broker (the service takes 200 in flight), but a service
    # that falls behind is not the steady state this measures: said apart, next to the verdict
    backlog = [(s["t_s"] / 60, s["sent"] - s["pings_stored"]) for s in judged]
    backlog_min = slope(backlog)
    # kept up: over the judged window the backlog neither grew nor stood above two samples' worth of pings
    allowed = 2 * args.rate * args.sample_s
    kept_up = len(backlog) >= 2 and backlog[-1][1] - backlog[0][1] <= allowed and backlog[-1][1] <= allowed
    state_min = slope([(s["t_s"] / 60, s["state_kib"]) for s in judged])
    # RSS per stored KiB of state as the states filled during the warm-up (after the first 2 min, whose
    # allocations are mostly the service's start); judged growth up to this factor times the stored states'
    # own growth is states still filling, not a leak
    warm = [s for s in samples if 120 <= s["t_s"] <= judged_from]
    d_state = warm[-1]["state_kib"] - warm[0]["state_kib"] if len(warm) >= 2 else 0.0
    factor = (warm[-1]["rss_kib"] - warm[0]["rss_kib"]) / d_state if d_state > 0 else 0.0
    filling = state_min * factor if d_state > 0 else None  # no warm-up past 2 min (a smoke run): cannot tell
    verdict, why = judge(alive, len(window), kib_min, kept_up, filling, args.max_slope_kib_min)
    return {
        "benchmark": "soak: flat memory of tracker run under a steady population",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": " ".join(["python", "bench/soak.py", *sys.argv[1:]]),
        "machine": {
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "shared": "2 cores shared with other work",
        },
        "population": {
            "devices": args.devices,
            "rate_pings_per_s": args.rate,
            "minutes": args.minutes,
            "connections": args.connections,
            "movers": "one in four on a 40-160 m circle at 4-8 m/s; the rest creeping at their spot in a Santos fence",
        },
        "sent": sender.sent,
        "acked": sender.acked,
        "pings_stored": stored,
        "stored_per_s_over_run": round(rate_stored, 1),
        "service_alive_at_end": alive,
        "sample_every_s": args.sample_s,
        "warmup_fixes_per_device": args.warmup_fixes,
        "warmup_minutes": args.warmup_minutes,
        "judged_from_s": judged_from,
        "rss_slope_kib_per_min": round(kib_min, 1),
        "rss_slope_before_judged_kib_per_min": round(
            slope([(s["t_s"] / 60, s["rss_kib"]) for s in samples if 120 <= s["t_s"] <= judged_from]), 1
        ),
        "stored_state_kib_judged_first": judged[0]["state_kib"] if judged else None,
        "stored_state_kib_judged_last": judged[-1]["state_kib"] if judged else None,
        "stored_state_slope_kib_per_min": round(state_min, 1),
        "rss_per_stored_state_kib_in_warmup": round(factor, 1),
        "rss_judged_first_mib": round(judged[0]["rss_kib"] / 1024, 1) if judged else None,
        "rss_judged_last_mib": round(judged[-1]["rss_kib"] / 1024, 1) if judged else None,
        "rss_max_mib": round(max(s["rss_kib"] for s in samples) / 1024, 1) if samples else None,
        "rss_hwm_mib": None if hwm is None else round(hwm / 1024, 1),
        "max_slope_kib_per_min": args.max_slope_kib_min,
        "threshold": "least-squares RSS slope over the judged window; 256 KiB/min is 4x below the smallest "
        "per-ping leak at 500 pings/s (a pointer and a small object, ~36 B per ping = 1 MiB/min)",
        "backlog_slope_per_min": round(backlog_min, 1),
        "backlog_judged_first": backlog[0][1] if backlog else None,
        "backlog_judged_last": backlog[-1][1] if backlog else None,
        "kept_up": kept_up,
        "verdict": verdict,
        "verdict_reason": why,
        "passed": verdict == "pass",
        "service_cpu_s": svc.cpu_s(),
        "samples": samples,
    }


def in_process(args: argparse.Namespace) -> dict[str, Any]:
    """The soak's traffic through ``Service.decode``, ``build_batch`` (the core, timers every
    ``tick_interval_s``), the store's state encoding and ``_adopt``, without broker or database, on a simulated
    clock (one batch per simulated second). What grows here is the core's and the codec's; what grows only
    in the service is the adapters'. Per simulated minute: RSS, pymalloc blocks and live objects per type."""
    import dataclasses
    import gc
    from collections import Counter
    from datetime import timedelta

    from geofences import load_fence_set
    from tracker.adapters.mqtt import Message
    from tracker.adapters.store import BatchResult
    from tracker.config import Settings
    from tracker.core import codec
    from tracker.service import Fences
    from tracker.service import Service as Tracker

    settings = dataclasses.replace(Settings(), unknown_devices="register")
    svc = Tracker(settings)
    fs = load_fence_set(SANTOS)
    svc._install(Fences.build([fs], settings.hysteresis_m, settings.entry_margin_m, files=frozenset({fs.port})))
    fleet = Fleet(args.devices, args.seed)
    rate, n = int(args.rate), args.devices
    t0 = datetime.now(UTC).replace(microsecond=0)
    sent, next_tick = 0, 0.0
    samples: list[dict[str, Any]] = []
    types: list[Counter[str]] = []
    wall = time.perf_counter()

    def step(decoded: list[Any], tick_at: datetime | None) -> None:
        batch, working = svc.build_batch(decoded, tick_at)
        for st in batch.states.values():
            codec.encode(st)  # what the store writes: the codec's memo lives in this process too
        svc._adopt(batch, working, BatchResult(len(batch.pings), list(batch.alerts), len(batch.updates)))

    for sec in range(int(args.minutes * 60)):
        now = t0 + timedelta(seconds=sec)
        decoded = []
        for _ in range(rate):
            topic, payload = fleet.fix(sent % n, now.timestamp())
            decoded.append(svc.decode(Message(topic, payload, 0, 1, False, False, 0.0), now))
            sent += 1
        step(decoded, None)
        if sec >= next_tick:
            next_tick = sec + settings.tick_interval_s
            step([], now)
        if sec % 60 == 59:
            gc.collect()
            types.append(Counter(type(o).__qualname__ for o in gc.get_objects()))
            rss = proc_status(os.getpid())["VmRSS"]
            # what fills by design: the stored states, and the open trips' visit lists (bounded by max_items)
            trips = [st.trips.open for st in svc.states.values() if st.trips is not None and st.trips.open is not None]
            samples.append({
                "t_s": sec + 1, "rss_kib": rss, "python_blocks": sys.getallocatedblocks(), "sent": sent,
                "state_kib": round(sum(len(codec.encode(st)) for st in svc.states.values()) / 1024, 1),
                "open_trips": len(trips), "open_trip_visits": sum(len(t.visits) for t in trips),
                "open_trip_visits_max": max((len(t.visits) for t in trips), default=0),
            })  # fmt: skip
            print(f"{(sec + 1) / 60:5.1f} sim min ({time.perf_counter() - wall:6.1f} s)  RSS {rss / 1024:7.1f} MiB  "
                  f"blocks {samples[-1]['python_blocks']:,}", flush=True)  # fmt: skip
    total_s = args.minutes * 60
    judged_from = max(total_s - args.judge_minutes * 60, min(warmup_s(args), total_s / 2))
    judged = [i for i, s in enumerate(samples) if s["t_s"] >= judged_from]
    kib_min = slope([(samples[i]["t_s"] / 60, samples[i]["rss_kib"]) for i in judged])
    grown = types[judged[-1]] - types[judged[0]] if judged else Counter()
    blocks = [samples[i]["python_blocks"] for i in judged]
    ok = len(judged) >= 3 and kib_min <= args.max_slope_kib_min
    return {
        "benchmark": "soak, in process: the service's core path on the soak's traffic, simulated clock",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": " ".join(["python", "bench/soak.py", *sys.argv[1:]]),
        "population": {"devices": args.devices, "rate_pings_per_s": args.rate, "simulated_minutes": args.minutes},
        "wall_s": round(time.perf_counter() - wall, 1),
        "judged_from_s": judged_from,
        "rss_slope_kib_per_min": round(kib_min, 1),
        "python_blocks_judged_first": blocks[0] if blocks else None,
        "python_blocks_judged_last": blocks[-1] if blocks else None,
        "objects_grown_in_judged_window": dict(grown.most_common(15)),
        "verdict": "pass" if ok else "grows",
        "verdict_reason": f"RSS slope {kib_min:.0f} KiB/min per simulated minute over the judged window "
        f"(max {args.max_slope_kib_min:g})",
        "passed": ok,
        "samples": samples,
    }


def plot(res: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install 'port-tracker[bench]'): plot skipped"
    xs = [s["t_s"] / 60 for s in res["samples"]]
    ys = [s["rss_kib"] / 1024 for s in res["samples"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(xs, ys, marker="o", markersize=3, label="service RSS")
    ax.axvline(res["judged_from_s"] / 60, color="grey", linestyle=":", label="judged from")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MiB")
    ax.set_title(
        f"{res['population']['devices']:,} devices, {res['population']['rate_pings_per_s']:g} pings/s: "
        f"RSS slope {res['rss_slope_kib_per_min']} KiB/min ({res['verdict']})",
        fontsize=9,
    )
    ax.set_ylim(bottom=0)
    states = [s.get("state_kib") for s in res["samples"]]
    if all(v is not None for v in states):
        ax2 = ax.twinx()
        ax2.plot(xs, [v / 1024 for v in states], color="tab:orange", linewidth=1, label="stored states")
        ax2.set_ylabel("stored states, MiB")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=8, loc="lower right")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"wrote {path}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=18.0)
    p.add_argument("--devices", type=int, default=2_000)
    p.add_argument("--rate", type=float, default=500.0, help="pings/s in all")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--sample-s", type=float, default=15.0)
    p.add_argument("--judge-minutes", type=float, default=8.0, help="the slope is taken over this last part")
    p.add_argument("--warmup-fixes", type=int, default=40, help="and not before each device has sent this many fixes")
    p.add_argument("--warmup-minutes", type=float, default=10.0, help="nor before this (states that fill by the clock)")
    p.add_argument("--max-slope-kib-min", type=float, default=MAX_SLOPE_KIB_MIN)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--plot", type=Path, default=PLOT)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="diagnosis: the same traffic through the service's core path in this process, on a simulated clock",
    )
    p.add_argument(
        "--tracemalloc", type=Path, default=None, help="diagnosis: the service writes tracemalloc snapshots into DIR"
    )
    p.add_argument("--trace-every-s", type=float, default=60.0, help="with --tracemalloc: seconds between snapshots")
    p.add_argument(
        "--trace-frames", type=int, default=0, help="with --tracemalloc: traceback depth (0: object counts only)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Against a live stack the soak is bounded in time; in process it sends nothing over any socket, so it
    # may run long enough in simulated time to pass the open trips' max_items bound (~1.5 h).
    max_minutes = 240 if args.in_process else 60
    if args.minutes <= 0 or args.minutes > max_minutes or args.rate <= 0 or args.rate > 5_000:
        raise SystemExit(f"--minutes must be in (0, {max_minutes}] and --rate in (0, 5000]: the soak is bounded")
    if args.in_process:
        out = INPROCESS if args.out == RESULTS else args.out
        res = in_process(args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {out}\nin-process: {res['verdict']}: {res['verdict_reason']}")
        return 0 if res["passed"] else 1
    res = asyncio.run(soak(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")
    if not args.no_plot:
        print(plot(res, args.plot))
    print(
        f"backlog (sent, not yet stored) {res['backlog_judged_first']} -> {res['backlog_judged_last']}: "
        f"{'kept up' if res['kept_up'] else 'the service fell behind (RSS then also holds in-flight work)'}"
    )
    print(
        f"soak {res['population']['minutes']:g} min: RSS slope {res['rss_slope_kib_per_min']} KiB/min over the last "
        f"{(args.minutes * 60 - res['judged_from_s']) / 60:g} min (max {args.max_slope_kib_min}; before: "
        f"{res['rss_slope_before_judged_kib_per_min']}), stored states {res['stored_state_kib_judged_first']} -> "
        f"{res['stored_state_kib_judged_last']} KiB, {res['pings_stored']:,} pings stored: {res['verdict']}"
        f" ({res['verdict_reason']})"
    )
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
