"""Broker accounts are bound to what they are (real Mosquitto with its dynamic-security plugin).

* No account can take over the service's session, whatever client id it presents.
* A device's own account publishes its own topic only; security and customs publish no pings.
* ``tracker device add/list/revoke`` create, show and disable device accounts; the broker
  keeps only a password hash.
* MQTT over TLS with the session's self-signed CA, including a client certificate.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import REPO_ROOT, Account, StackInfo
from tests.integration.conftest import new_device_id, service_env, start_service
from tests.integration.mqttprobe import Probe, Received
from tracker.adapters.brokeradmin import CONTROL_TOPIC, BrokerAdmin, new_password
from tracker.adapters.mqtt import MqttLink, TlsOptions
from tracker.service import Service

LAT, LON = -24.30, -46.20  # open sea south of Santos, inside no fence


def admin(stack: StackInfo) -> BrokerAdmin:
    return BrokerAdmin(stack.mqtt_host, stack.mqtt_port, stack.admin_user, stack.admin_password)


def new_device_account(stack: StackInfo) -> Account:
    dev = new_device_id("OWN")
    password = new_password()
    with admin(stack) as a:
        a.create_device(dev, password)
    return Account(dev, password)


def ping(ts: float, i: int = 0) -> str:
    return json.dumps({"ts": ts, "lat": LAT, "lon": LON + i * 1e-5})


async def stored(stack: StackInfo, device_id: str) -> int:
    conn = await asyncpg.connect(stack.dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pings WHERE device_id = $1", device_id))
    finally:
        await conn.close()


async def wait_stored(stack: StackInfo, device_id: str, count: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while (n := await stored(stack, device_id)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return n


class Intruder:
    """Connects with a chosen client id, a clean start and no session expiry: what would,
    on a broker that honoured client ids, push the holder of that id off and discard its
    session (stored pings and subscriptions)."""

    def __init__(self, stack: StackInfo, user: str, password: str, client_id: str, tls: bool = False) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, reconnect_on_failure=False
        )
        self.client.username_pw_set(user, password)
        if tls:
            t = stack.tls
            self.client.tls_set_context(TlsOptions(str(t.ca), str(t.client_cert), str(t.client_key)).context())
        self.connack = threading.Event()
        self.accepted = False

        def on_connect(c: paho.Client, u: object, flags: object, reason: object, props: object) -> None:
            self.accepted = not reason.is_failure  # type: ignore[attr-defined]
            self.connack.set()

        self.client.on_connect = on_connect
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        port = stack.tls_port if tls else stack.mqtt_port
        self.client.connect(stack.mqtt_host, port, keepalive=30, clean_start=True, properties=props)
        self.client.loop_start()
        assert self.connack.wait(5), "no CONNACK"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------- the session cannot be taken over


async def test_no_account_can_take_over_or_discard_the_service_session(
    stack: StackInfo, stack_env: dict[str, str], accounts: Callable[[str], Account]
) -> None:
    env = service_env(stack_env)
    service_id = env["TRACKER_MQTT_USERNAME"]  # the service's client id, as the broker assigns it
    own_device = new_device_account(stack)
    # Each attempt: the shared gateway account and a device's own account, each presenting the
    # service's client id and the former fixed default id, with a clean start, on the plain and
    # on the TLS listener.
    intruders = [
        (user, password, client_id, tls)
        for user, password in ((stack.device_user, stack.device_password), (own_device.username, own_device.password))
        for client_id in (service_id, "port-tracker-ingest")
        for tls in (False, True)
    ]
    relay = accounts("gateway")
    publisher = Probe(stack.mqtt_host, stack.mqtt_port, relay.username, relay.password)
    dev = new_device_id()
    t0 = time.time() - 1000
    sent = 0

    async def attempt_while_publishing() -> None:
        nonlocal sent
        attempt = [await asyncio.to_thread(Intruder, stack, u, p, c, t) for u, p, c, t in intruders]
        try:
            # They are let in, under their own names, and stay connected while pings flow.
            assert all(i.accepted for i in attempt)
            for _ in range(10):
                await publisher.apublish(f"trackers/{dev}/ping", ping(t0 + sent, sent))
                sent += 1
        finally:
            for i in attempt:
                i.close()

    svc = await start_service(env)
    try:
        link = svc.link
        assert link is not None
        for _ in range(5):
            await attempt_while_publishing()
        assert await wait_stored(stack, dev, 50) == 50
        assert (link.connects, link.disconnects) == (1, 0), "the service was pushed off the broker"
    finally:
        await svc.stop()

    # The service away, its session holds the queue: five more attempts with clean starts
    # would have discarded it. Everything published meanwhile arrives when it comes back.
    try:
        for _ in range(5):
            await attempt_while_publishing()
    finally:
        publisher.close()
    svc = await start_service(env)
    try:
        assert await wait_stored(stack, dev, 100) == 100
    finally:
        await svc.stop()


async def test_a_wrong_password_for_the_service_account_does_not_disturb_it(
    stack: StackInfo, stack_env: dict[str, str]
) -> None:
    env = service_env(stack_env)
    svc = await start_service(env)
    try:
        intruder = await asyncio.to_thread(Intruder, stack, env["TRACKER_MQTT_USERNAME"], "guessed", "x")
        intruder.close()
        assert not intruder.accepted
        unknown = await asyncio.to_thread(Intruder, stack, "nobody-" + new_password()[:8], "guessed", "x")
        unknown.close()
        assert not unknown.accepted
        await asyncio.sleep(0.3)
        assert svc.link is not None
        assert (svc.link.connects, svc.link.disconnects) == (1, 0)
    finally:
        await svc.stop()


# --------------------------------------------------------------------------- what each account may publish


async def test_a_device_account_publishes_only_its_own_ping_topic(
    stack: StackInfo, service: Service, accounts: Callable[[str], Account]
) -> None:
    own = new_device_account(stack)
    other = new_device_id()
    watcher_account = accounts("service")
    watcher = Probe(stack.mqtt_host, stack.mqtt_port, watcher_account.username, watcher_account.password)
    device = Probe(stack.mqtt_host, stack.mqtt_port, own.username, own.password)
    try:
        watcher.subscribe("trackers/+/ping")
        watcher.subscribe("owntracks/#")
        t = time.time() - 60
        await device.apublish(f"trackers/{other}/ping", ping(t))  # another device's topic
        await device.apublish(f"owntracks/{other}/phone", json.dumps({"_type": "location", "lat": LAT, "lon": LON}))
        await device.apublish(f"trackers/{own.username}/ping", ping(t + 1))  # its own, published last
        assert await wait_stored(stack, own.username, 1) == 1
        first = await watcher.expect(timeout=5)
        assert first.topic == f"trackers/{own.username}/ping", "a forged topic reached a subscriber"
        await asyncio.sleep(0.3)
        assert watcher.inbox.empty()
        assert await stored(stack, other) == 0
    finally:
        device.close()
        watcher.close()


async def test_security_customs_and_admin_accounts_cannot_publish_pings(
    stack: StackInfo, service: Service, device: Probe, accounts: Callable[[str], Account]
) -> None:
    watcher_account = accounts("service")
    watcher = Probe(stack.mqtt_host, stack.mqtt_port, watcher_account.username, watcher_account.password)
    watcher.subscribe("trackers/+/ping")
    dev = new_device_id()
    t = time.time() - 60
    try:
        for user, password in (
            (stack.security_user, stack.security_password),
            (stack.customs_user, stack.customs_password),
            (stack.admin_user, stack.admin_password),
        ):
            probe = Probe(stack.mqtt_host, stack.mqtt_port, user, password)
            try:
                await probe.apublish(f"trackers/{dev}/ping", ping(t))
            finally:
                probe.close()
        await device.apublish(f"trackers/{dev}/ping", ping(t + 1))  # the gateway's, after them
        assert await wait_stored(stack, dev, 1) == 1
        await asyncio.sleep(0.3)
        assert await stored(stack, dev) == 1
        assert [json.loads(m.payload)["ts"] for m in _drain(watcher)] == [t + 1]
    finally:
        watcher.close()


def _drain(probe: Probe) -> list[Received]:
    out = []
    while not probe.inbox.empty():
        out.append(probe.inbox.get_nowait())
    return out


def test_only_the_admin_account_drives_the_dynamic_security_plugin(stack: StackInfo) -> None:
    for user, password in (
        (stack.service_user, stack.service_password),
        (stack.device_user, stack.device_password),
        (stack.security_user, stack.security_password),
    ):
        name = "forged-" + new_password()[:8]
        probe = Probe(stack.mqtt_host, stack.mqtt_port, user, password)
        try:
            command = {"command": "createClient", "username": name, "password": "x", "roles": [{"rolename": "service"}]}
            probe.publish(CONTROL_TOPIC, json.dumps({"commands": [command]}))
        finally:
            probe.close()
        with admin(stack) as a:
            assert a.get(name) is None, f"{user} created a broker account"


# --------------------------------------------------------------------------- tracker device add / list / revoke


def tracker_cli(stack_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(stack_env)
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dynsec_file(stack: StackInfo) -> Path:
    record = stack.stack_dir / "mosquitto.path"
    directory = Path(record.read_text().strip()) if record.exists() else stack.stack_dir / "mosquitto"
    return directory / "dynamic-security.json"


async def test_device_add_creates_a_hashed_account_that_list_shows_and_revoke_disables(
    stack: StackInfo, stack_env: dict[str, str], service: Service
) -> None:
    dev = new_device_id("BOX")
    added = await asyncio.to_thread(tracker_cli, stack_env, "device", "add", dev, "--kind", "container")
    assert added.returncode == 0, added.stderr
    password = added.stdout.strip()
    assert len(password) >= 32 and "\n" not in password, "the password alone is printed on stdout"
    assert f"trackers/{dev}/ping" in added.stderr

    conn = await asyncpg.connect(stack.dsn)
    try:
        row = await conn.fetchrow("SELECT kind, active, auto_registered FROM devices WHERE device_id = $1", dev)
    finally:
        await conn.close()
    assert dict(row) == {"kind": "container", "active": True, "auto_registered": False}

    saved = dynsec_file(stack).read_text()
    assert password not in saved, "the broker's file holds the password in clear"
    client = next(c for c in json.loads(saved)["clients"] if c["username"] == dev)
    assert {"password", "salt", "iterations"} <= client.keys()
    assert [r["rolename"] for r in client["roles"]] == [f"device-{dev}"]

    # The device logs in with the printed password and its fix is stored.
    probe = Probe(stack.mqtt_host, stack.mqtt_port, dev, password)
    kicked = threading.Event()
    probe.client.on_disconnect = lambda c, u, f, rc, p: kicked.set()
    try:
        await probe.apublish(f"trackers/{dev}/ping", ping(time.time() - 30))
        assert await wait_stored(stack, dev, 1) == 1

        listed = await asyncio.to_thread(tracker_cli, stack_env, "device", "list")
        assert listed.returncode == 0, listed.stderr
        line = next(x for x in listed.stdout.splitlines() if x.startswith(dev))
        assert "container" in line and "own account" in line

        again = await asyncio.to_thread(tracker_cli, stack_env, "device", "add", dev, "--kind", "truck")
        assert again.returncode == 1 and "exists already" in again.stderr
        assert again.stdout == ""

        revoked = await asyncio.to_thread(tracker_cli, stack_env, "device", "revoke", dev)
        assert revoked.returncode == 0, revoked.stderr
        assert await asyncio.to_thread(kicked.wait, 5), "the revoked device stayed connected"
    finally:
        probe.client.loop_stop()
    refused = await asyncio.to_thread(Intruder, stack, dev, password, "")
    refused.close()
    assert not refused.accepted, "a revoked account could log in again"
    listed = await asyncio.to_thread(tracker_cli, stack_env, "device", "list")
    assert "disabled" in next(x for x in listed.stdout.splitlines() if x.startswith(dev))
    conn = await asyncpg.connect(stack.dsn)
    try:
        assert await conn.fetchval("SELECT kind FROM devices WHERE device_id = $1", dev) == "container"
    finally:
        await conn.close()


async def test_device_add_refuses_accounts_that_are_not_devices_and_needs_the_admin(
    stack: StackInfo, stack_env: dict[str, str]
) -> None:
    hijack = await asyncio.to_thread(tracker_cli, stack_env, "device", "add", stack.service_user, "--new-password")
    assert hijack.returncode == 1 and "not a device account" in hijack.stderr
    # The service's account still logs in with its own password.
    probe = Probe(stack.mqtt_host, stack.mqtt_port, stack.service_user, stack.service_password)
    probe.close()
    without_admin = {k: v for k, v in stack_env.items() if not k.startswith("TRACKER_MQTT_ADMIN_")}
    refused = await asyncio.to_thread(tracker_cli, without_admin, "device", "add", new_device_id())
    assert refused.returncode == 2 and "TRACKER_MQTT_ADMIN_USERNAME" in refused.stderr
    relayed = new_device_id()
    only_db = await asyncio.to_thread(tracker_cli, without_admin, "device", "add", relayed, "--no-account")
    assert only_db.returncode == 0, only_db.stderr
    assert only_db.stdout == ""
    with admin(stack) as a:
        assert a.get(relayed) is None


async def test_each_relay_gets_a_gateway_account_and_they_run_side_by_side(
    stack: StackInfo, stack_env: dict[str, str], service: Service
) -> None:
    names = [new_device_id("GW"), new_device_id("GW")]
    passwords = []
    for name in names:
        made = await asyncio.to_thread(tracker_cli, stack_env, "gateway", "add", name)
        assert made.returncode == 0, made.stderr
        passwords.append(made.stdout.strip())
    relays = [Probe(stack.mqtt_host, stack.mqtt_port, n, p) for n, p in zip(names, passwords, strict=True)]
    devices = [new_device_id(), new_device_id()]
    try:
        t = time.time() - 60
        for i, relay in enumerate(relays):  # both connected at once, each for several devices
            for j, dev in enumerate(devices):
                await relay.apublish(f"trackers/{dev}/ping", ping(t + i * 10 + j, j))
        assert [await wait_stored(stack, dev, 2) for dev in devices] == [2, 2]
        assert all(r.client.is_connected() for r in relays)
        revoked = await asyncio.to_thread(tracker_cli, stack_env, "gateway", "revoke", names[0])
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 5
        while relays[0].client.is_connected() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not relays[0].client.is_connected() and relays[1].client.is_connected()
    finally:
        for r in relays:
            r.client.loop_stop()
    not_a_gateway = await asyncio.to_thread(tracker_cli, stack_env, "gateway", "add", stack.security_user)
    assert not_a_gateway.returncode == 1 and "not a gateway account" in not_a_gateway.stderr


# --------------------------------------------------------------------------- TLS


def tls_env(stack: StackInfo, stack_env: dict[str, str], **extra: str) -> dict[str, str]:
    return service_env(
        stack_env,
        TRACKER_MQTT_PORT=str(stack.tls_port),
        TRACKER_MQTT_TLS_CA=str(stack.tls.ca),
        TRACKER_MQTT_TLS_CERT=str(stack.tls.client_cert),
        TRACKER_MQTT_TLS_KEY=str(stack.tls.client_key),
        **extra,
    )


async def test_service_and_device_over_tls_with_a_client_certificate(
    stack: StackInfo, stack_env: dict[str, str], accounts: Callable[[str], Account]
) -> None:
    svc = await start_service(tls_env(stack, stack_env))
    relay = accounts("gateway")
    tls = TlsOptions(str(stack.tls.ca), str(stack.tls.client_cert), str(stack.tls.client_key))
    device = Probe(stack.mqtt_host, stack.tls_port, relay.username, relay.password, tls=tls)
    dev = new_device_id()
    try:
        assert svc.link is not None and svc.link.port == stack.tls_port
        await device.apublish(f"trackers/{dev}/ping", ping(time.time() - 30))
        assert await wait_stored(stack, dev, 1) == 1
        ready = await svc.ready()
        assert ready["broker"] and ready["database"], ready
    finally:
        device.close()
        await svc.stop()


async def _link_connects(stack: StackInfo, account: Account, tls: TlsOptions | None) -> bool:
    link = MqttLink(
        host=stack.mqtt_host,
        port=stack.tls_port,
        username=account.username,
        password=account.password,
        client_id=account.username,
        reconnect_max_s=1,
        tls=tls,
    )
    link.start()
    try:
        return await link.wait_connected(3)
    finally:
        await link.stop()


async def test_tls_refuses_an_unknown_broker_certificate_and_a_missing_client_certificate(
    stack: StackInfo, accounts: Callable[[str], Account]
) -> None:
    account = accounts("service")
    t = stack.tls
    assert await _link_connects(stack, account, TlsOptions(str(t.ca), str(t.client_cert), str(t.client_key)))
    # A broker certificate from a CA we were not told to trust (system CAs: none of ours).
    assert not await _link_connects(stack, account, TlsOptions(str(t.other_ca), str(t.client_cert), str(t.client_key)))
    assert not await _link_connects(stack, account, TlsOptions("", str(t.client_cert), str(t.client_key)))
    # No client certificate: the listener requires one.
    assert not await _link_connects(stack, account, TlsOptions(str(t.ca)))
    # Plain MQTT on the TLS port gets nowhere.
    assert not await _link_connects(stack, account, None)
