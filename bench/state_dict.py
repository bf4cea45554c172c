"""Train the zstd dictionary of stored device states and append it to tracker/core/codec_dict.py.

A few hundred bytes of msgpack per device compress poorly on their own: most of a state is field layout, fence
ids, detector names and alert kinds that every device repeats. A dictionary trained on typical states holds
those once for all rows. The samples are the states of simulator replays of both shipped ports (seed 2; the
state benchmark measures seed 1) taken every few minutes of the replay, not only at its end, and of a synthetic
fleet standing in Santos (bench/hotpath.py ``synthetic_states``, seed 2).

Run once per retraining; the dictionaries already in codec_dict.py are kept (rows name theirs by id).

    python bench/state_dict.py [--size 16384]
"""

from __future__ import annotations

import argparse
import base64
import random
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zstandard

from bench import hotpath
from bench.detection import RUN_ON_S, declared_pairs, items_in_delivery_order
from geofences import FenceIndex, load_port
from tracker.config import Settings
from tracker.core import codec
from tracker.core.codec_dict import DICTIONARIES
from tracker.core.engine import Engine
from tracker.core.model import DeviceKind, Inspection
from tracker.core.pipeline import Pipeline
from tracker.sim.scenario import SimConfig, generate

OUT = Path(__file__).resolve().parents[1] / "tracker" / "core" / "codec_dict.py"
SEED = 2


def replay_samples(port: str, trucks: int, hours: float, every: int, rng: random.Random) -> list[bytes]:
    """The packed states of a third of the devices every ``every`` items of a replay (bench/detection.py's)."""
    sc = generate(SimConfig(port=port, trucks=trucks, hours=hours, seed=SEED))
    containers = {d: [d] for d, k in sc.devices.items() if k is DeviceKind.CONTAINER}
    pipeline = Pipeline(FenceIndex(load_port(port).fences, entry_margin_m=Settings().entry_margin_m))
    engine = Engine(pipeline, kinds=sc.devices, containers=containers, tick_every_s=5.0)
    pairs = declared_pairs(sc)
    out: list[bytes] = []
    k = 0
    for n, item in enumerate(items_in_delivery_order(sc)):
        when = item.ts if isinstance(item, Inspection) else item.received or item.ts
        while k < len(pairs) and pairs[k][0] <= when:
            engine.pair(pairs[k][1], pairs[k][2], pairs[k][0])
            k += 1
        engine.run([item])
        if n % every == every - 1:
            out.extend(codec.pack(s) for s in engine.states.values() if rng.random() < 0.33)
    last = max((p.received or p.ts for p in sc.pings), default=sc.start)
    engine.run([], until=last + timedelta(seconds=RUN_ON_S))
    out.extend(codec.pack(s) for s in engine.states.values())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size", type=int, default=16384, help="dictionary bytes")
    p.add_argument("--trucks", type=int, default=60)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--every", type=int, default=2_000, help="replay items between snapshots")
    p.add_argument("--synthetic", type=int, default=1000, help="devices of the synthetic fleet")
    args = p.parse_args()
    rng = random.Random(SEED)
    samples: list[bytes | bytearray | memoryview] = []
    for port in ("santos", "callao"):
        got = replay_samples(port, args.trucks, args.hours, args.every, rng)
        print(f"{port}: {len(got):,} samples", flush=True)
        samples += got
    states, _, _ = hotpath.synthetic_states(args.synthetic, 3, SEED)
    samples += [codec.pack(s) for s in states.values()]
    print(f"{len(samples):,} samples, {sum(len(b) for b in samples) / len(samples):.0f} B mean", flush=True)
    d = zstandard.train_dictionary(args.size, samples, level=codec._LEVEL)
    text = OUT.read_text()
    kept = [*DICTIONARIES, d.as_bytes()]
    body = "DICTIONARIES: tuple[bytes, ...] = (\n"
    for i, b in enumerate(kept):
        lines = textwrap.wrap(base64.b64encode(b).decode(), 100)
        ident = zstandard.ZstdCompressionDict(b, dict_type=zstandard.DICT_TYPE_FULLDICT).dict_id()
        body += f"    # {i + 1}: id {ident}, {len(b):,} B\n    _b64(\n"
        body += "".join(f'        "{line}"\n' for line in lines)
        body += "    ),\n"
    body += ")\n"
    head = text[: text.index("DICTIONARIES")]
    if "_b64" not in head:
        head = head.rstrip() + "\n\nfrom base64 import b64decode as _b64\n\n"
    OUT.write_text(head + body)
    print(f"wrote {OUT}: dictionary {d.dict_id()} of {len(d.as_bytes()):,} B ({len(kept)} kept)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
