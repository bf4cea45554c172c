"""``tracker`` command line: run the service, manage the schema, fences, devices, tokens and the audit trail."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tracker.config import Settings

if TYPE_CHECKING:
    from tracker.adapters.brokeradmin import BrokerAdmin


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
    import getpass

    from geofences import load_fence_set
    from tracker.adapters.store import Store
    from tracker.adapters.store_fences import FenceStore, content_sha256

    store = await Store.connect(settings.db_dsn, max_size=2)
    try:
        await store.prepare()
        fences = FenceStore(store.pool)
        try:
            author = f"cli:{getpass.getuser()}"
        except (KeyError, OSError):  # a container user without a passwd entry
            author = "cli"
        for path in paths:
            raw = json.loads(await asyncio.to_thread(Path(path).read_text))
            fs = load_fence_set(raw)  # validate before storing anything
            latest = await fences.latest(fs.port)
            if latest is not None and latest.sha256 == content_sha256(fs.to_geojson()):
                print(f"{path}: port {fs.port!r} unchanged, still version {latest.version}")
                continue
            base = 0 if latest is None or latest.version is None else latest.version
            saved = await fences.save(fs, base=base, author=author, change="import")
            print(
                f"{path}: loaded {saved.fences} fences for port {fs.port!r} as version {saved.version}"
                " (a running service takes it at its next start; the API changes fences without one)"
            )
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


def dsn_user(dsn: str) -> str | None:
    """The user a DSN logs in as, if it says (URL or libpq key=value form)."""
    if "://" in dsn:
        return urlsplit(dsn).username
    for part in dsn.split():
        key, _, value = part.partition("=")
        if key == "user":
            return value.strip("'")
    return None


async def _migrate(settings: Settings) -> int:
    """Migrations run as the schema owner; the service's role is granted its rights afterwards."""
    from tracker.adapters.store import Store

    owner_dsn = settings.db_owner_dsn or settings.db_dsn
    service_role = settings.db_service_role or dsn_user(settings.db_dsn)
    grant_to = service_role if settings.db_owner_dsn and service_role != dsn_user(owner_dsn) else None
    if grant_to is None:
        print(
            "warning: migrating as the service's own role (no separate TRACKER_DB_OWNER_DSN): that role owns the"
            " schema and can disable the alert chain's append-only triggers",
            file=sys.stderr,
        )
    store = await Store.connect(owner_dsn, max_size=2)
    try:
        applied = await store.migrate(grant_to=grant_to)
        print(
            f"schema up to date ({len(applied)} migration(s) applied);"
            f" pings stored in {'a TimescaleDB hypertable' if store.timescale else 'native partitions'}"
            + (f"; service role {grant_to!r} granted its rights" if grant_to else "")
        )
    finally:
        await store.close()
    return 0


def _broker_admin(settings: Settings) -> BrokerAdmin:
    from tracker.adapters.brokeradmin import BrokerAdmin
    from tracker.adapters.mqtt import mqtt_tls_options

    return BrokerAdmin(
        settings.mqtt_host,
        settings.mqtt_port,
        settings.mqtt_admin_username,
        settings.mqtt_admin_password,
        tls=mqtt_tls_options(settings),
    )


async def _device_add(args: argparse.Namespace, settings: Settings) -> int:
    """Registers the device, then (unless --no-account) gives it its own broker account.

    The password is printed once on stdout and kept nowhere by the project; the broker stores
    a salted hash. An existing account is found before anything changes, so a refused
    ``add`` leaves the database as it was.
    """
    from tracker.adapters.brokeradmin import BrokerAccount, BrokerAdminError, device_role, device_topics, new_password
    from tracker.adapters.store import Store
    from tracker.core.model import DeviceKind

    try:
        topics = device_topics(args.device_id)
    except ValueError as exc:
        print(f"tracker device add: {exc}", file=sys.stderr)
        return 2
    if not args.no_account and not (settings.mqtt_admin_username and settings.mqtt_admin_password):
        print(
            "tracker device add: the broker admin account is needed to create the device's MQTT account"
            " (set TRACKER_MQTT_ADMIN_USERNAME / TRACKER_MQTT_ADMIN_PASSWORD, e.g. from the stack's secrets.env),"
            " or pass --no-account for a device whose pings a gateway relays",
            file=sys.stderr,
        )
        return 2

    def existing_account() -> BrokerAccount | None:
        with _broker_admin(settings) as admin:
            return admin.get(args.device_id)

    try:
        existing = None if args.no_account else await asyncio.to_thread(existing_account)
    except BrokerAdminError as exc:
        print(f"tracker device add: {exc}", file=sys.stderr)
        return 1
    if existing is not None and device_role(args.device_id) not in existing.roles:
        # The service's, a gateway's or the admin's own account: not this command's business.
        print(f"tracker device add: broker account {args.device_id!r} is not a device account", file=sys.stderr)
        return 1
    if existing is not None and not args.new_password:
        print(
            f"tracker device add: broker account {args.device_id!r} exists already;"
            " --new-password issues a new password (and enables the account)",
            file=sys.stderr,
        )
        return 1
    store = await Store.connect(settings.db_dsn, max_size=2)
    try:
        await store.prepare()
        await store.register_device(args.device_id, DeviceKind(args.kind), name=args.name)
    finally:
        await store.close()
    print(f"registered {args.kind} {args.device_id}", file=sys.stderr)
    if args.no_account:
        return 0
    password = new_password()

    def issue() -> str:
        with _broker_admin(settings) as admin:
            if admin.get(args.device_id) is None:
                admin.create_device(args.device_id, password)
                return "created"
            admin.set_password(args.device_id, password)
            admin.enable(args.device_id)
            return "given a new password and enabled"

    try:
        what = await asyncio.to_thread(issue)
    except BrokerAdminError as exc:
        print(f"tracker device add: {exc}", file=sys.stderr)
        return 1
    print(
        f"MQTT account {args.device_id!r} {what}; it may publish {', '.join(topics)} only."
        " Its password follows, shown this once (the broker keeps only a salted hash):",
        file=sys.stderr,
    )
    print(password)
    return 0


async def _device_list(settings: Settings) -> int:
    from tracker.adapters.brokeradmin import BrokerAccount, BrokerAdminError, device_role
    from tracker.adapters.store import Store

    store = await Store.connect(settings.db_dsn, max_size=2)
    try:
        await store.prepare()
        rows = await store.device_list()
    finally:
        await store.close()
    accounts: dict[str, BrokerAccount] | None = None
    if settings.mqtt_admin_username and settings.mqtt_admin_password:

        def fetch() -> list[BrokerAccount]:
            with _broker_admin(settings) as admin:
                return admin.accounts()

        try:
            accounts = {a.username: a for a in await asyncio.to_thread(fetch)}
        except BrokerAdminError as exc:
            print(f"tracker device list: broker accounts unknown: {exc}", file=sys.stderr)
    print(f"{'device':24} {'kind':10} {'active':6} {'mqtt account':24} name")
    for r in rows:
        if accounts is None:
            account = "?"
        elif (a := accounts.get(r["device_id"])) is None or device_role(r["device_id"]) not in a.roles:
            account = "none (via a gateway)"
        else:
            account = "disabled" if a.disabled else "own account"
        registered = "auto" if r["auto_registered"] else ("yes" if r["active"] else "no")
        print(f"{r['device_id']:24} {r['kind']:10} {registered:6} {account:24} {r['name'] or ''}")
    return 0


def _device_revoke(settings: Settings, device_id: str) -> int:
    from tracker.adapters.brokeradmin import BrokerAdminError, device_role

    try:
        with _broker_admin(settings) as admin:
            account = admin.get(device_id)
            if account is None or device_role(device_id) not in account.roles:
                print(f"tracker device revoke: {device_id!r} has no device account on the broker", file=sys.stderr)
                return 1
            admin.disable(device_id)
    except BrokerAdminError as exc:
        print(f"tracker device revoke: {exc}", file=sys.stderr)
        return 1
    print(
        f"MQTT account {device_id!r} disabled and disconnected; `tracker device add {device_id} --new-password`"
        " enables it again with a new password",
        file=sys.stderr,
    )
    return 0


def _gateway(settings: Settings, args: argparse.Namespace) -> int:
    """Gateway accounts: each relay gets one, as the broker allows one connection per account."""
    from tracker.adapters.brokeradmin import GATEWAY_ROLE, BrokerAdminError, new_password
    from tracker.adapters.decode import DEVICE_ID_RE

    name = args.name
    if not DEVICE_ID_RE.match(name):
        print(f"tracker gateway: {name!r} is not a valid account name", file=sys.stderr)
        return 2
    try:
        with _broker_admin(settings) as admin:
            account = admin.get(name)
            if account is not None and GATEWAY_ROLE not in account.roles:
                print(f"tracker gateway: broker account {name!r} is not a gateway account", file=sys.stderr)
                return 1
            if args.gcmd == "revoke":
                if account is None:
                    print(f"tracker gateway revoke: no broker account {name!r}", file=sys.stderr)
                    return 1
                admin.disable(name)
                print(f"gateway account {name!r} disabled and disconnected", file=sys.stderr)
                return 0
            if account is not None and not args.new_password:
                print(f"tracker gateway add: {name!r} exists already; --new-password issues a new one", file=sys.stderr)
                return 1
            password = new_password()
            if account is None:
                admin.create_client(name, password, [GATEWAY_ROLE], textname=f"gateway {name}")
            else:
                admin.set_password(name, password)
                admin.enable(name)
    except BrokerAdminError as exc:
        print(f"tracker gateway: {exc}", file=sys.stderr)
        return 1
    print(
        f"gateway account {name!r} ready; it may publish trackers/+/ping and owntracks/# for any device."
        " Its password follows, shown this once:",
        file=sys.stderr,
    )
    print(password)
    return 0


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
    from tracker.cli_orgs import add_parsers

    add_parsers(sub)  # token, org, coverage
    d = sub.add_parser("device", help="devices").add_subparsers(dest="dcmd", required=True)
    da = d.add_parser("add", help="register a device and create its own MQTT account (password printed once)")
    da.add_argument("device_id")
    da.add_argument("--kind", default="truck", choices=("truck", "container", "seal"))
    da.add_argument("--name")
    da.add_argument(
        "--no-account", action="store_true", help="register only: a gateway relays its pings (shared gateway account)"
    )
    da.add_argument(
        "--new-password", action="store_true", help="the account exists: issue a new password and enable it"
    )
    d.add_parser("list", help="registered devices and the state of their MQTT accounts")
    dr = d.add_parser("revoke", help="disable the device's MQTT account and disconnect it")
    dr.add_argument("device_id")
    gw = sub.add_parser("gateway", help="accounts of gateways that relay many devices").add_subparsers(
        dest="gcmd", required=True
    )
    ga = gw.add_parser("add", help="create a gateway account (password printed once)")
    ga.add_argument("name")
    ga.add_argument("--new-password", action="store_true", help="the account exists: issue a new password")
    gr = gw.add_parser("revoke", help="disable a gateway account and disconnect it")
    gr.add_argument("name")
    from tracker import cli_audit

    cli_audit.add_parsers(sub)  # alerts verify, audit
    cu = sub.add_parser("custody", help="signed custody reports").add_subparsers(dest="ccmd", required=True)
    cv = cu.add_parser("verify", help="check a custody report (JSON, PDF or HTML) with the public key only")
    cv.add_argument("file")
    cv.add_argument("--public-key", action="append", default=[], help="Ed25519 public key file; repeatable")
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
    from tracker import cli_audit

    if cli_audit.offline(args):
        return cli_audit.run(args, None)
    if args.cmd == "custody":
        from tracker.custody import verify_command

        return verify_command(args.file, args.public_key)
    settings = Settings.from_env()
    if args.cmd == "run":
        from tracker.service import run_forever

        if settings.mqtt_admin_password:
            logging.getLogger("tracker").warning(
                "TRACKER_MQTT_ADMIN_PASSWORD is set for the service, which never needs the broker admin account"
            )

        from tracker.memtrace import start_from_env

        start_from_env()  # off unless TRACKER_TRACEMALLOC is set (deploy/README.md, "Memory tracing")
        asyncio.run(run_forever(settings))
        return 0
    if args.cmd == "migrate":
        return asyncio.run(_migrate(settings))
    if args.cmd == "geofences" and args.fcmd == "load":
        return asyncio.run(_fences_load(settings, args.files))
    if args.cmd in ("token", "org", "coverage"):
        from tracker.cli_orgs import run

        return run(args, settings)
    if args.cmd == "device" and args.dcmd == "add":
        return asyncio.run(_device_add(args, settings))
    if args.cmd == "device" and args.dcmd == "list":
        return asyncio.run(_device_list(settings))
    if args.cmd == "device" and args.dcmd == "revoke":
        return _device_revoke(settings, args.device_id)
    if args.cmd == "gateway":
        return _gateway(settings, args)
    if args.cmd in ("alerts", "audit"):
        return cli_audit.run(args, settings)
    return 2


if __name__ == "__main__":
    sys.exit(main())
