"""``tracker`` command line: run the service, manage the schema, fences, devices and tokens."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from tracker.config import Settings


def _fences_check(paths: Sequence[str]) -> int:
    from geofences import FenceError, load_fence_set

    status = 0
    for path in paths:
        try:
            fs = load_fence_set(Path(path))
        except (FenceError, OSError, ValueError) as exc:
            print(f"{path}: INVALID: {exc}", file=sys.stderr)
            status = 1
            continue
        kinds: dict[str, int] = {}
        for f in fs.fences:
            kinds[f.kind.value] = kinds.get(f.kind.value, 0) + 1
        summary = ", ".join(f"{k}={n}" for k, n in sorted(kinds.items()))
        print(f"{path}: ok: port {fs.port!r}, {len(fs.fences)} fences ({summary})")
    return status


async def _fences_load(settings: Settings, paths: Sequence[str]) -> int:
    from geofences import load_fence_set
    from tracker.adapters.store import Store

    store = await Store.connect(settings.db_dsn, max_size=2)
    try:
        await store.migrate()
        for path in paths:
            raw = json.loads(await asyncio.to_thread(Path(path).read_text))
            fs = load_fence_set(raw)  # validate before storing anything
            n = await store.save_fence_set(fs.port, fs.name, fs.source, fs.licence, raw)
            print(f"{path}: loaded {n} fences for port {fs.port!r}")
    finally:
        await store.close()
    return 0


def _fences_import(args: argparse.Namespace) -> int:
    from tracker.gis_import import import_fences

    kind_map = dict(item.split("=", 1) for item in args.map) if args.map else None
    result = import_fences(
        args.source,
        port=args.port,
        kind_field=args.kind_field,
        kind_map=kind_map,
        default_kind=args.default_kind,
        id_field=args.id_field,
        name_field=args.name_field,
        layer=args.layer,
    )
    text = json.dumps(result, indent=1)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {len(result['features'])} fences to {args.out}", file=sys.stderr)
    return 0


async def _migrate(settings: Settings) -> int:
    from tracker.adapters.store import Store

    store = await Store.connect(settings.db_dsn, max_size=2)
    try:
        applied = await store.migrate()
        print(
            f"schema up to date ({len(applied)} migration(s) applied);"
            f" pings stored in {'a TimescaleDB hypertable' if store.timescale else 'native partitions'}"
        )
    finally:
        await store.close()
    return 0


async def _token_create(settings: Settings, name: str, role: str, devices: Sequence[str]) -> int:
    from tracker.adapters.api import ROLES, hash_token
    from tracker.adapters.store import Store

    if role not in ROLES:
        print(f"role must be one of {ROLES}", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(32)
    scope = {"devices": list(devices)} if role == "insurer" else {}
    store = await Store.connect(settings.db_dsn, max_size=2)
    try:
        await store.migrate()
        await store.pool.execute(
            "INSERT INTO api_tokens (token_sha256, name, role, scope) VALUES ($1, $2, $3, $4)",
            hash_token(token),
            name,
            role,
            json.dumps(scope),
        )
    finally:
        await store.close()
    print(token)
    return 0


async def _device_add(settings: Settings, device_id: str, kind: str, name: str | None) -> int:
    from tracker.adapters.store import Store
    from tracker.core.model import DeviceKind

    store = await Store.connect(settings.db_dsn, max_size=2)
    try:
        await store.migrate()
        await store.register_device(device_id, DeviceKind(kind), name=name)
    finally:
        await store.close()
    print(f"registered {kind} {device_id}")
    return 0


async def _verify(settings: Settings) -> int:
    from tracker.adapters.store import Store

    store = await Store.connect(settings.db_dsn, max_size=2)
    try:
        ok, count, broken = await store.verify_chain()
    finally:
        await store.close()
    if ok:
        print(f"alert chain intact ({count} alerts)")
        return 0
    print(f"alert chain BROKEN after {count} alerts (first bad alert: {broken})", file=sys.stderr)
    return 1


def _config() -> int:
    for env, default, doc in Settings.describe():
        print(f"{env:34} {default!s:40} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tracker", description="port-tracker service and tools")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run", help="run the service (MQTT ingest, detectors, store, HTTP API)")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    sub.add_parser("config", help="list every setting, its environment variable and default")
    sub.add_parser("simulate", add_help=False, help="generate a labelled port traffic scenario (simulate --help)")
    g = sub.add_parser("geofences", help="fence sets").add_subparsers(dest="fcmd", required=True)
    c = g.add_parser("check", help="validate fence-set GeoJSON files")
    c.add_argument("files", nargs="+")
    ld = g.add_parser("load", help="validate and store fence sets in the database")
    ld.add_argument("files", nargs="+")
    im = g.add_parser("import", help="convert GIS data (GeoPackage, Shapefile, KML, GeoJSON) to a fence set")
    im.add_argument("source")
    im.add_argument("--port", required=True)
    im.add_argument("--kind-field")
    im.add_argument("--map", action="append", help="VALUE=KIND mapping of the kind field (repeatable)")
    im.add_argument("--default-kind")
    im.add_argument("--id-field")
    im.add_argument("--name-field")
    im.add_argument("--layer")
    im.add_argument("--out", default="-")
    t = sub.add_parser("token", help="API tokens").add_subparsers(dest="tcmd", required=True)
    tc = t.add_parser("create", help="create a token and print it once")
    tc.add_argument("--name", required=True)
    tc.add_argument("--role", required=True)
    tc.add_argument("--device", action="append", default=[], help="insurer scope (repeatable)")
    d = sub.add_parser("device", help="devices").add_subparsers(dest="dcmd", required=True)
    da = d.add_parser("add", help="register a device")
    da.add_argument("device_id")
    da.add_argument("--kind", default="truck", choices=("truck", "container", "seal"))
    da.add_argument("--name")
    a = sub.add_parser("alerts", help="alerts").add_subparsers(dest="acmd", required=True)
    a.add_parser("verify", help="check the alert hash chain for edits or deletions")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        from tracker.sim.cli import main as simulate

        return simulate(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.cmd == "config":
        return _config()
    if args.cmd == "geofences" and args.fcmd == "check":
        return _fences_check(args.files)
    if args.cmd == "geofences" and args.fcmd == "import":
        return _fences_import(args)
    settings = Settings.from_env()
    if args.cmd == "run":
        from tracker.service import run_forever

        asyncio.run(run_forever(settings))
        return 0
    if args.cmd == "migrate":
        return asyncio.run(_migrate(settings))
    if args.cmd == "geofences" and args.fcmd == "load":
        return asyncio.run(_fences_load(settings, args.files))
    if args.cmd == "token":
        return asyncio.run(_token_create(settings, args.name, args.role, args.device))
    if args.cmd == "device":
        return asyncio.run(_device_add(settings, args.device_id, args.kind, args.name))
    if args.cmd == "alerts":
        return asyncio.run(_verify(settings))
    return 2


if __name__ == "__main__":
    sys.exit(main())
