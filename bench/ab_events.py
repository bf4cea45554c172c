"""A/B check of a core change: replay the same simulator traffic through two checkouts and compare every event.

A change meant to make the core faster must not change what it decides. This replays Santos and Callao traffic
(``bench.detection.replay``: delivery order, pairing declarations, customs decisions, ticks) through the code of
two source trees, each in its own interpreter, and compares the emitted events one by one, in order, with the
replay clock at which each was emitted and the flags counted per kind.

    python bench/ab_events.py --base /tmp/main-tree            # this checkout against another
    python bench/ab_events.py --base REF_DIR --trucks 100 --hours 2 --anomaly-share 0.3

The base tree is any directory holding the project's sources (``git archive main | tar -x -C DIR``); both
trees run with this interpreter and its installed dependencies. Exit status 1 when the events differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_DUMP = r"""
import json, sys
from tracker.sim.scenario import SimConfig, generate
from bench.detection import replay
port, trucks, hours, seed, share, out = sys.argv[1:7]
cfg = SimConfig(port=port, trucks=int(trucks), hours=float(hours), seed=int(seed), anomaly_share=float(share))
sc = generate(cfg)
engine = replay(sc)
with open(out, "w") as fh:
    for em in engine.emitted:
        fh.write(json.dumps([em.at.isoformat(), repr(em.event)]) + "\n")
    fh.write(json.dumps(["flags", sorted(engine.flags.items())]) + "\n")
"""


def dump(tree: Path, port: str, trucks: int, hours: float, seed: int, share: float, out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    args = [port, str(trucks), str(hours), str(seed), str(share), str(out)]
    subprocess.run([sys.executable, "-c", _DUMP, *args], cwd=tree, env=env, check=True)


def compare(a: Path, b: Path) -> tuple[int, int, list[str]]:
    """(events in a, events in b, first differences)."""
    la = a.read_text().splitlines()
    lb = b.read_text().splitlines()
    diffs = []
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            diffs.append(f"#{i}\n  base: {x[:400]}\n  this: {y[:400]}")
            if len(diffs) >= 5:
                break
    if len(la) != len(lb) and len(diffs) < 5:
        diffs.append(f"lengths differ: base {len(la)} lines, this {len(lb)}")
    return len(la) - 1, len(lb) - 1, diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="source tree to compare against")
    ap.add_argument("--ports", default="santos,callao")
    ap.add_argument("--trucks", type=int, default=60)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--anomaly-share", type=float, default=0.3)
    args = ap.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for port in args.ports.split(","):
            outs = []
            for name, tree in (("base", args.base.resolve()), ("this", REPO)):
                out = Path(tmp) / f"{port}-{name}.jsonl"
                dump(tree, port, args.trucks, args.hours, args.seed, args.anomaly_share, out)
                outs.append(out)
            na, nb, diffs = compare(*outs)
            verdict = "identical" if not diffs else "DIFFERENT"
            print(json.dumps({"port": port, "events_base": na, "events_this": nb, "verdict": verdict}))
            for d in diffs:
                print(d)
            failed |= bool(diffs)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
