"""The in-process stages of ``bench/throughput.py``: the core replay (``core``) and device state size (``state``).

Kept apart from the geofence stage's module so that each measuring function can be run on a tiny input
by the unit test without the geofence world, and so that ``throughput.py`` stays the one command line.
"""

from __future__ import annotations

import cProfile
import dataclasses
import enum
import importlib
import pstats
import random
import statistics
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from geofences import FenceIndex, FenceKind, load_port
from tracker.config import Settings
from tracker.core import codec
from tracker.core.engine import Engine, tune_gc
from tracker.core.model import DeviceKind, Ping
from tracker.core.pipeline import Pipeline
from tracker.core.state import DeviceState
from tracker.sim.scenario import Scenario, SimConfig, generate

REPO = Path(__file__).resolve().parents[1]
TARGET_CORE_PINGS_PER_S = 25_000
"""The hot-path issue's target for the core: 25,000 pings/s on one core, i.e. at most 40 µs per ping."""
TARGET_STATE_BYTES = 1024
"""The hot-path issue's target for one device's state: at most 1 KiB."""


# ------------------------------------------------------------------------------------------------ core

# (module suffix, qualified function name) -> stage label; cumulative time of each, from one profiled replay
STAGES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "engine_feed (buffering only)": (("tracker/core/engine.py", "Engine.feed"),),
    "run_batch (all per-ping work and ticks)": (("tracker/core/batch.py", "run_batch"),),
    "prefetch (one fence lookup per batch)": (("tracker/core/pipeline.py", "Pipeline.prefetch"),),
    "reorder_step": (("tracker/core/reorder.py", "Reorderer.step"),),
    "pipeline_step": (("tracker/core/pipeline.py", "Pipeline.step"),),
    "integrity_check": (("tracker/core/integrity.py", "check"),),
    "geofence_step": (("tracker/core/geofence.py", "step"),),
    "motion_update": (("tracker/core/motion.py", "update"),),
    "detector_on_fix": tuple(
        (f"tracker/core/{m}.py", f"{c}.on_fix")
        for m, c in (
            ("stops", "StopDetector"),
            ("dark", "DarkDetector"),
            ("inspection", "AccessWindowDetector"),
            ("rendezvous", "RendezvousDetector"),
            ("pairing", "PairingDetector"),
        )
    ),
    "world_place": (("tracker/core/pipeline.py", "Pipeline._place"),),
    "ticks (batch._tick)": (("tracker/core/batch.py", "_tick"),),
    "pipeline_tick": (("tracker/core/pipeline.py", "Pipeline.tick"),),
    "next_due": (("tracker/core/pipeline.py", "Pipeline.next_due"),),
    "engine_adopt (schedules once per device per batch)": (("tracker/core/engine.py", "Engine._adopt"),),
    "pairing_declarations": (("tracker/core/engine.py", "Engine.pair"),),
    "inspections": (("tracker/core/engine.py", "Engine.inspect"),),
}


def scenario_of(trucks: int, hours: float, seed: int) -> tuple[Scenario, float]:
    t0 = time.perf_counter()
    sc = generate(SimConfig(port="santos", trucks=trucks, hours=hours, seed=seed))
    return sc, time.perf_counter() - t0


def fence_index(port: str) -> FenceIndex:
    """The port's fence index as the service builds it, once at start-up (and again only on a fence reload)."""
    return FenceIndex(load_port(port).fences, entry_margin_m=Settings().entry_margin_m)


def _replay(scenario: Scenario, index: FenceIndex) -> Engine:
    # the detection benchmark's own replay: delivery order, pairing declarations, customs decisions, ticks; a fresh
    # pipeline (world view, caches of its own) over the index built once, as the service keeps it between batches
    from bench.detection import replay

    return replay(scenario, pipeline=Pipeline(index))


def stage_shares(prof: cProfile.Profile, total_s: float) -> dict[str, dict[str, float]]:
    """Cumulative seconds and share of the profiled replay spent in each stage (stages nest: see STAGES)."""
    stats = pstats.Stats(prof)
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, dict[str, float]] = {}
    for label, keys in STAGES.items():
        cum = 0.0
        calls = 0
        for (filename, _line, func), (_cc, nc, _tt, ct, _callers) in table.items():
            fn = filename.replace("\\", "/")
            for suffix, name in keys:
                short = name.rsplit(".", 1)[-1]
                if fn.endswith(suffix) and func == short and _qual_ok(fn, _line, name):
                    cum += ct
                    calls += nc
        out[label] = {"cum_s": round(cum, 3), "share": round(cum / total_s, 4) if total_s else 0.0, "calls": calls}
    return out


def _qual_ok(filename: str, line: int, qualname: str) -> bool:
    """cProfile names functions without their class: tell ``Engine.tick`` from ``Pipeline.tick`` by line."""
    if "." not in qualname:
        return True
    cls, meth = qualname.split(".", 1)
    try:
        rel = Path(filename).resolve().relative_to(REPO)
    except ValueError:
        return False
    mod = importlib.import_module(".".join(rel.with_suffix("").parts))
    code = getattr(getattr(getattr(mod, cls, None), meth, None), "__code__", None)
    return code is not None and code.co_firstlineno == line


def core(trucks: int, hours: float, seed: int, runs: int, profile: bool) -> dict[str, Any]:
    """Pings per second of the whole core on simulator traffic: ``runs`` fresh replays, median taken."""
    scenario, gen_s = scenario_of(trucks, hours, seed)
    b0 = time.perf_counter()
    index = fence_index("santos")  # start-up work, not per ping: outside the timed replays
    build_s = time.perf_counter() - b0
    tune_gc()  # the service's collector settings, applied once its start-up is done (here: the scenario built)
    pings = len(scenario.pings)
    wall: list[float] = []
    cpu: list[float] = []
    emitted = flags = 0
    for k in range(max(1, runs)):
        c0, t0 = time.process_time(), time.perf_counter()
        engine = _replay(scenario, index)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        emitted, flags = len(engine.emitted), sum(engine.flags.values())
        print(f"core run {k + 1}: {wall[-1]:.2f} s, {pings / wall[-1]:,.0f} pings/s", flush=True)
    med, cmed = statistics.median(wall), statistics.median(cpu)
    rate = round(pings / med)
    out: dict[str, Any] = {
        "scenario": {
            "port": "santos",
            "trucks": trucks,
            "hours": hours,
            "seed": seed,
            "anomaly_share": SimConfig().anomaly_share,
            "generate_s": round(gen_s, 2),
            "fence_index_build_s": round(build_s, 3),
        },
        "pings": pings,
        "devices": len(scenario.devices),
        "devices_reporting": len({p.device_id for p in scenario.pings}),
        "inspections": len(scenario.inspections),
        "events_emitted": emitted,
        "engine_flags": flags,
        "runs": len(wall),
        "runs_s": [round(r, 3) for r in wall],
        "cpu_runs_s": [round(r, 3) for r in cpu],
        "median_s": round(med, 3),
        "core_pings_per_s": rate,
        "us_per_ping": round(med / pings * 1e6, 1),
        "cpu_pings_per_s": round(pings / cmed),
        "cpu_us_per_ping": round(cmed / pings * 1e6, 1),
        "code_path": "bench.detection.replay: Engine(Pipeline(Santos fences), tick_every_s=5) fed in delivery "
        "order with pairing declarations and customs decisions; timed per run including the delivery-order merge; "
        "the fence index is built once before the runs (as the service does at start-up), each run gets a fresh "
        "pipeline over it, so the first run also builds the port's corridor graphs",
        "target_pings_per_s": TARGET_CORE_PINGS_PER_S,
        "target_us_per_ping": round(1e6 / TARGET_CORE_PINGS_PER_S, 1),
        "target_met": rate >= TARGET_CORE_PINGS_PER_S,
    }
    if profile:
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        _replay(scenario, index)
        prof.disable()
        total = time.perf_counter() - t0
        out["profile"] = {
            "note": "one extra replay under cProfile (which slows it down, unevenly: many small calls suffer most); "
            "cumulative time per stage, stages nest (pipeline_step holds geofence, motion, detectors)",
            "profiled_replay_s": round(total, 2),
            "stages": stage_shares(prof, total),
            "top_tottime": _top(prof, 15),
        }
    return out


def _top(prof: cProfile.Profile, n: int) -> list[dict[str, Any]]:
    stats = pstats.Stats(prof)
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    rows = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    out = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in rows:
        where = filename.split("/site-packages/")[-1].split("/wt/bench/")[-1]
        out.append(
            {"function": f"{where}:{line}({func})", "calls": nc, "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)}
        )
    return out


# ----------------------------------------------------------------------------------------------- state


def deep_size(objs: Iterable[Any], seen: set[int] | None = None) -> int:
    """Bytes of everything reachable from ``objs`` by ``sys.getsizeof``, each object counted once.

    Follows dict keys and values, list/tuple/set items and dataclass slots; objects shared with the rest of the
    program (None, booleans, enum members, classes) are not the state's, so they are skipped.
    """
    seen = set() if seen is None else seen
    total = 0
    stack = list(objs)
    while stack:
        o = stack.pop()
        if o is None or isinstance(o, bool | type) or id(o) in seen:
            continue
        if isinstance(o, enum.Enum):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset):
            stack.extend(o)
        elif isinstance(o, msgspec.Struct):
            stack.extend(getattr(o, f) for f in o.__struct_fields__)
        elif dataclasses.is_dataclass(o):
            stack.extend(getattr(o, f.name) for f in dataclasses.fields(o))
    return total


def spots(seed: int, n: int) -> list[tuple[float, float]]:
    """``n`` points spread over Santos's operational fences (not the port boundary), as devices stand there."""
    rng = random.Random(seed)
    fences = [f for f in load_port("santos").fences if f.kind is not FenceKind.PORT_BOUNDARY]
    out = []
    for _ in range(n):
        g = fences[rng.randrange(len(fences))].geometry
        minx, miny, maxx, maxy = g.bounds
        out.append((rng.uniform(minx, maxx), rng.uniform(miny, maxy)))
    return out


def synthetic_states(devices: int, fixes: int, seed: int) -> tuple[dict[str, DeviceState], float, int]:
    """``devices`` devices (half trucks, half containers) replayed ``fixes`` fixes each through a fresh engine.

    Each stands at its own random spot inside the port and creeps 1 m between fixes 10 s apart (one step of
    every device, then the next), so every detector keeps what it keeps for a device in the port.
    """
    kinds = {f"S{i:06d}": DeviceKind.TRUCK if i % 2 == 0 else DeviceKind.CONTAINER for i in range(devices)}
    index = FenceIndex(load_port("santos").fences, entry_margin_m=Settings().entry_margin_m)
    engine = Engine(Pipeline(index), kinds=kinds, tick_every_s=5.0)
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    where = spots(seed, devices)
    t0 = time.perf_counter()
    for k in range(fixes):
        ts = start + timedelta(seconds=10 * k)
        for i, dev in enumerate(kinds):
            lon, lat = where[i]
            engine.feed(Ping(dev, ts, lon + k * 1e-5, lat, speed=0.1, received=ts))
            if (i + 1) % 20_000 == 0:
                print(f"  round {k + 1}/{fixes}: {i + 1:,} devices, {time.perf_counter() - t0:.1f} s", flush=True)
    return engine.states, time.perf_counter() - t0, len(engine.emitted)


def size_stats(states: Mapping[str, DeviceState]) -> dict[str, Any]:
    encoded = [codec.encode(s) for s in states.values()]
    serialized = [len(b) for b in encoded]
    inflated = sum(len(codec.pack(s)) for s in states.values())  # the msgpack before compression
    # the same states without their reorder window (DeviceState.log, the last 30 s of fixes)
    bare = [len(codec.encode(msgspec.structs.replace(s, log=()))) for s in states.values()]
    t0 = time.perf_counter()
    for s in states.values():
        codec.encode(s)
    encode_us = (time.perf_counter() - t0) / len(states) * 1e6
    t0 = time.perf_counter()
    for b in encoded:
        codec.decode(b)
    decode_us = (time.perf_counter() - t0) / len(states) * 1e6
    del encoded
    ids = sum(len(d.encode()) for d in states)
    mem = deep_size(states.values())
    n = len(states)
    srt = sorted(serialized)
    return {
        "devices": n,
        "serialized_bytes_per_device_mean": round(sum(serialized) / n, 1),
        "serialized_bytes_median": statistics.median(srt),
        "serialized_bytes_p95": srt[int(0.95 * (n - 1))],
        "serialized_bytes_max": srt[-1],
        "serialized_bytes_without_log_mean": round(sum(bare) / n, 1),
        "serialized_bytes_before_compression_mean": round(inflated / n, 1),
        "encode_us_per_device": round(encode_us, 1),
        "decode_us_per_device": round(decode_us, 1),
        "serialized_device_id_bytes_mean": round(ids / n, 1),
        "memory_bytes_per_device": round(mem / n, 1),
        "memory_total_mib": round(mem / 2**20, 2),
    }


def state(sizes: Iterable[int], fixes: int, seed: int, sim: Scenario | None = None) -> dict[str, Any]:
    """Serialized and in-memory size of DeviceState at each size of a synthetic fleet (and on simulator traffic)."""
    by_size: dict[str, Any] = {}
    for n in sizes:
        states, build_s, emitted = synthetic_states(n, fixes, seed)
        st = size_stats(states)
        st.update(fixes_per_device=fixes, build_s=round(build_s, 1), events_emitted=emitted)
        by_size[str(n)] = st
        print(
            f"state {n:,} devices: {st['serialized_bytes_per_device_mean']} B serialized, "
            f"{st['memory_bytes_per_device']} B in memory ({build_s:.1f} s)",
            flush=True,
        )
        del states
    out: dict[str, Any] = {
        "serialized": "len(tracker.core.codec.encode(state)), the compressed msgpack bytes the store writes to "
        "device_state.state (tracker/adapters/store.py write_batch), device id and reorder window included; "
        "without_log: the same state without its window; before_compression: the msgpack before zstd; encode/decode: "
        "µs per device on this shared machine (indicative)",
        "memory": "sys.getsizeof summed recursively over each DeviceState (Struct and dataclass slots, dicts, lists, "
        "tuples, "
        "sets, strings, numbers, datetimes), every object counted once over the whole fleet and singletons "
        "(None, booleans, enum members) left out; per device = total / devices. Not tracemalloc: the engine's "
        "reorder logs, emitted events and world index are not the state and would be counted with it",
        "synthetic": "half trucks, half containers, each at a random spot inside a Santos fence, fed its fixes "
        "10 s apart through a fresh Engine (all detectors, ticks every 5 s)",
        "by_devices": by_size,
    }
    if sim is not None:
        engine = _replay(sim, fence_index(sim.port))
        out["simulator_end_of_replay"] = size_stats(engine.states)
    largest = max((v["serialized_bytes_per_device_mean"] for v in by_size.values()), default=0)
    out["state_bytes_per_device"] = largest
    out["state_memory_bytes_per_device"] = max((v["memory_bytes_per_device"] for v in by_size.values()), default=0)
    out["target_bytes_per_device"] = TARGET_STATE_BYTES
    out["target_met"] = {
        "serialized": largest <= TARGET_STATE_BYTES,
        "memory": out["state_memory_bytes_per_device"] <= TARGET_STATE_BYTES,
    }
    return out
