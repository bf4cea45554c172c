"""The memory-tracing hook of ``tracker run``: off unless asked for, and what it writes can be compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

from tracker import memtrace

_CHILD = """
import os, signal, sys, time
from pathlib import Path
from tracker import memtrace
memtrace.start_from_env()
out = Path(os.environ["TRACKER_TRACEMALLOC"])
def snap(n):
    os.kill(os.getpid(), signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while not (out / f"types-{n:03d}.json").exists():
        assert time.monotonic() < deadline, "no snapshot"
        time.sleep(0.05)
snap(1)
kept = [[0] * 120 for _ in range(2000)]  # ~2 MB of lists that stay: the growth the diff must show
snap(2)
print(memtrace.compare(str(out / "snap-001.tracemalloc"), str(out / "snap-002.tracemalloc"), top=3))
"""


def test_off_by_default() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRACKER_TRACEMALLOC"}
    code = (
        "import tracemalloc; from tracker import memtrace; memtrace.start_from_env(); print(tracemalloc.is_tracing())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
    assert not tracemalloc.is_tracing()


def test_snapshots_on_signal_show_what_grew(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TRACKER_TRACEMALLOC": str(tmp_path),
        "TRACKER_TRACEMALLOC_FRAMES": "4",
        "TRACKER_TRACEMALLOC_EVERY_S": "0",
    }
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("total growth")
    assert float(first.split()[2]) > 1500  # KiB: the 2 MB kept between the two snapshots
    kept_line = _CHILD.splitlines().index(next(x for x in _CHILD.splitlines() if x.startswith("kept =")))
    assert f'"<string>", line {kept_line + 1}' in out.stdout.splitlines()[2]  # the line that allocated it, on top
    body = json.loads((tmp_path / "types-002.json").read_text())
    assert body["types"]["list"] >= 2000
    assert body["python_blocks"] > 0 and body["rss_kib"] > 0
    assert memtrace.main([]) == 2  # usage without two files
