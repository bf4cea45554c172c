"""Opt-in memory tracing for ``tracker run``: tracemalloc snapshots and object counts, dumped to a directory.

Off unless ``TRACKER_TRACEMALLOC`` names a directory. Then tracemalloc records allocations (with
``TRACKER_TRACEMALLOC_FRAMES`` frames, 12 by default; it slows the service by about half), and every
``TRACKER_TRACEMALLOC_EVERY_S`` seconds (60; 0 = only on the signal) and on SIGUSR2 a snapshot is written
as ``snap-<n>.tracemalloc`` with ``types-<n>.json`` (live objects per type, from the garbage collector).
Two snapshots are compared with ``python -m tracker.memtrace OLD NEW``: the tracebacks whose memory grew
most. The files hold source lines and object counts only, never payloads, settings or secrets; a leak
that grows with the pings shows as a traceback whose size grows snapshot after snapshot, while a state
that fills to a bound stops growing once the population's states are in place.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class _Dumper:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.n = 0
        self.lock = threading.Lock()

    def dump(self) -> None:
        with self.lock:
            self.n += 1
            body: dict[str, object] = {"t": time.time(), "rss_kib": _rss_kib()}
            if tracemalloc.is_tracing():
                # unfiltered: filtering millions of traces is a Python loop that would hold the GIL for minutes
                tracemalloc.take_snapshot().dump(str(self.out / f"snap-{self.n:03d}.tracemalloc"))
                body["traced_kib"] = tracemalloc.get_traced_memory()[0] // 1024
            # where RSS goes when no Python object grows: pymalloc's blocks against glibc's heap (arenas kept)
            body["python_blocks"] = sys.getallocatedblocks()
            body["malloc"] = _mallinfo()
            counts = Counter(type(o).__qualname__ for o in gc.get_objects())
            body["types"] = dict(counts.most_common(200))
            (self.out / f"types-{self.n:03d}.json").write_text(json.dumps(body))
            log.info("memtrace: snapshot %d written to %s", self.n, self.out)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


_MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS.split()]


def _mallinfo() -> dict[str, int]:
    """glibc's mallinfo2 in KiB (main arena + mmapped), or {} off glibc: in use, free but kept, mmapped."""
    try:
        libc = ctypes.CDLL(None)
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _Mallinfo2
    m = fn()
    return {"arena_kib": m.arena // 1024, "in_use_kib": m.uordblks // 1024, "free_kib": m.fordblks // 1024,
            "mmapped_kib": m.hblkhd // 1024}  # fmt: skip


def start_from_env() -> None:
    """Start tracing when TRACKER_TRACEMALLOC is set; a no-op otherwise (the default)."""
    where = os.environ.get("TRACKER_TRACEMALLOC", "")
    if not where:
        return
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    frames = int(os.environ.get("TRACKER_TRACEMALLOC_FRAMES", "12"))
    if frames > 0:  # 0: object counts and allocator figures only, at no cost between snapshots
        tracemalloc.start(frames)
    dumper = _Dumper(out)
    every = float(os.environ.get("TRACKER_TRACEMALLOC_EVERY_S", "60"))
    # the signal only wakes a thread: a snapshot taken inside the handler would run in the event loop's frame
    wake = threading.Event()
    signal.signal(signal.SIGUSR2, lambda _s, _f: wake.set())

    def loop() -> None:
        while True:
            wake.wait(every if every > 0 else None)
            wake.clear()
            try:
                dumper.dump()
            except Exception:
                log.exception("memtrace: snapshot failed")

    threading.Thread(target=loop, name="memtrace", daemon=True).start()
    what = f"tracemalloc ({frames} frames) and object counts" if frames > 0 else "object counts"
    log.warning("memtrace: %s every %ss and on SIGUSR2 into %s", what, every, out)


def compare(old: str, new: str, top: int = 25, key: str = "traceback") -> str:
    """The allocation sites (or tracebacks) that grew most between two snapshot files."""
    a, b = tracemalloc.Snapshot.load(old), tracemalloc.Snapshot.load(new)
    lines = []
    stats = b.compare_to(a, key)
    total = sum(s.size_diff for s in stats)
    lines.append(f"total growth {total / 1024:.1f} KiB, {sum(s.count_diff for s in stats):+d} blocks")
    for s in stats[:top]:
        lines.append(f"{s.size_diff / 1024:+9.1f} KiB {s.count_diff:+8d} blocks (now {s.size / 1024:.1f} KiB)")
        frames = s.traceback.format(limit=8, most_recent_first=True) if key == "traceback" else [str(s.traceback)]
        lines.extend("    " + f for f in frames)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    key = "traceback"
    if args and args[0] in ("--lineno", "--filename"):
        key = args.pop(0)[2:]
    if len(args) != 2:
        print("usage: python -m tracker.memtrace [--lineno|--filename] OLD.tracemalloc NEW.tracemalloc")
        return 2
    print(compare(args[0], args[1], key=key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
