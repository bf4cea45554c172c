"""The development stack itself: broker ACLs, authentication, persistent sessions, database.

Runs against the real Mosquitto and PostgreSQL started by the ``stack`` fixture.
"""

from __future__ import annotations

import os
import pwd
import queue
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.conftest import free_port, run_stack
from tracker.adapters.brokeradmin import BrokerAdmin

if TYPE_CHECKING:
    from tests.conftest import Account, StackInfo

TIMEOUT_S = 5.0
QUIET_S = 1.0


class Client:
    """A paho client on its own network thread, with blocking helpers for tests."""

    def __init__(
        self,
        stack: StackInfo,
        username: str | None,
        password: str | None,
        *,
        client_id: str | None = None,
        v5: bool = False,
    ) -> None:
        self.stack = stack
        self.v5 = v5
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.suback_event = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connack = reason_code
        self.session_present = flags.session_present
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self.subacks[mid] = reason_codes
        self.suback_event.set()

    def connect(self, *, clean_start: bool = True, session_expiry: int | None = None) -> ReasonCode:
        properties: Properties | None = None
        if self.v5 and session_expiry is not None:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = session_expiry
        self.connected.clear()
        if self.v5:
            self.client.connect(
                self.stack.mqtt_host,
                self.stack.mqtt_port,
                keepalive=30,
                clean_start=clean_start,
                properties=properties,
            )
        else:
            self.client.connect(self.stack.mqtt_host, self.stack.mqtt_port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT_S), "no CONNACK"
        assert self.connack is not None
        return self.connack

    def subscribe(self, topic: str, qos: int = 1) -> list[ReasonCode]:
        self.suback_event.clear()
        result, mid = self.client.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None
        assert self.suback_event.wait(TIMEOUT_S), f"no SUBACK for {topic}"
        return self.subacks[mid]

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def receive(self, timeout: float = TIMEOUT_S) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def assert_nothing(self, within: float = QUIET_S) -> None:
        try:
            message = self.messages.get(timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {message.topic}: {message.payload!r}")

    def close(self) -> None:
        if self.client.is_connected():
            self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def connected(stack: StackInfo, username: str, password: str) -> Iterator[Client]:
    client = Client(stack, username, password)
    try:
        reason = client.connect()
        assert not reason.is_failure, f"{username} refused: {reason}"
        yield client
    finally:
        client.close()


def service(stack: StackInfo) -> Client:
    return Client(stack, stack.service_user, stack.service_password)


# --------------------------------------------------------------------------- ACL


def test_gateway_ping_reaches_service(stack: StackInfo) -> None:
    with (
        connected(stack, stack.service_user, stack.service_password) as svc,
        connected(stack, stack.device_user, stack.device_password) as gateway,
    ):
        assert not svc.subscribe("trackers/+/ping")[0].is_failure
        gateway.publish("trackers/TRUCK-042/ping", b'{"ts": 1700000000, "lat": -23.98, "lon": -46.3}')
        message = svc.receive()
        assert message.topic == "trackers/TRUCK-042/ping"
        assert message.payload == b'{"ts": 1700000000, "lat": -23.98, "lon": -46.3}'


def test_gateway_cannot_read_alerts(stack: StackInfo) -> None:
    with (
        connected(stack, stack.device_user, stack.device_password) as gateway,
        connected(stack, stack.security_user, stack.security_password) as security,
        connected(stack, stack.service_user, stack.service_password) as svc,
    ):
        # Mosquitto may grant the SUBACK; the ACL is enforced on delivery.
        gateway.subscribe("alerts/#")
        assert not security.subscribe("alerts/#")[0].is_failure
        svc.publish("alerts/SANTOS/restricted", b'{"device": "TRUCK-001"}')
        assert security.receive().payload == b'{"device": "TRUCK-001"}'
        gateway.assert_nothing()


def test_gateway_cannot_publish_alerts(stack: StackInfo) -> None:
    with (
        connected(stack, stack.service_user, stack.service_password) as svc,
        connected(stack, stack.security_user, stack.security_password) as security,
        connected(stack, stack.device_user, stack.device_password) as gateway,
    ):
        svc.subscribe("alerts/#")
        assert not security.subscribe("alerts/#")[0].is_failure
        gateway.client.publish("alerts/SANTOS/restricted", b"forged", qos=1)
        security.assert_nothing()
        # The service has no business reading alerts either.
        svc.publish("alerts/SANTOS/restricted", b"genuine")
        assert security.receive().payload == b"genuine"
        svc.assert_nothing(0.2)


def test_other_accounts_are_confined(stack: StackInfo) -> None:
    with (
        connected(stack, stack.service_user, stack.service_password) as svc,
        connected(stack, stack.security_user, stack.security_password) as security,
        connected(stack, stack.customs_user, stack.customs_password) as customs,
        connected(stack, stack.device_user, stack.device_password) as gateway,
    ):
        assert not svc.subscribe("customs/inspections")[0].is_failure
        assert not svc.subscribe("trackers/+/ping")[0].is_failure
        security.subscribe("trackers/+/ping")
        customs.subscribe("#")
        # Only customs may announce inspections, only the gateway (or the device itself) positions.
        security.client.publish("customs/inspections", b"forged", qos=1)
        customs.client.publish("trackers/TRUCK-001/ping", b"forged", qos=1)
        svc.assert_nothing(0.5)
        customs.publish("customs/inspections", b'{"container": "MSCU1234567"}')
        assert svc.receive().payload == b'{"container": "MSCU1234567"}'
        gateway.publish("trackers/TRUCK-001/ping", b'{"ts": 1}')
        assert svc.receive().payload == b'{"ts": 1}'
        security.assert_nothing(0.3)
        customs.assert_nothing(0.1)
        svc.assert_nothing(0.1)


def test_anonymous_connect_is_refused(stack: StackInfo) -> None:
    client = Client(stack, None, None)
    try:
        reason = client.connect()
    finally:
        client.close()
    assert reason.is_failure, f"anonymous client accepted: {reason}"


def test_wrong_password_is_refused(stack: StackInfo) -> None:
    client = Client(stack, stack.device_user, "not-the-password")
    try:
        reason = client.connect()
    finally:
        client.close()
    assert reason.is_failure


# --------------------------------------------------------------------------- sessions


def _persistent_subscriber(stack: StackInfo, account: Account) -> Client:
    """The broker names the session after the account: a fresh account is a fresh session."""
    client = Client(stack, account.username, account.password, v5=True)
    reason = client.connect(clean_start=False, session_expiry=3600)
    assert not reason.is_failure
    return client


def _publish_three(stack: StackInfo, device: str) -> list[bytes]:
    payloads = [f'{{"ts": {1700000000 + i}, "lat": -12.05, "lon": -77.15}}'.encode() for i in range(3)]
    with connected(stack, stack.device_user, stack.device_password) as gateway:
        for payload in payloads:
            gateway.publish(f"trackers/{device}/ping", payload, qos=1)
    return payloads


def _receive_all(client: Client, count: int) -> list[bytes]:
    return [bytes(client.receive().payload) for _ in range(count)]


def test_persistent_session_gets_messages_sent_while_away(stack: StackInfo, accounts: Callable[[str], Account]) -> None:
    account = accounts("service")
    device = f"TRUCK-{uuid.uuid4().hex[:6]}"
    first = _persistent_subscriber(stack, account)
    try:
        assert not first.subscribe(f"trackers/{device}/ping", qos=1)[0].is_failure
    finally:
        first.close()

    payloads = _publish_three(stack, device)

    again = _persistent_subscriber(stack, account)
    try:
        assert again.session_present
        assert _receive_all(again, 3) == payloads
        again.assert_nothing(0.3)
    finally:
        again.close()


# --------------------------------------------------------------------------- database


async def test_database_accepts_the_dsn(stack: StackInfo) -> None:
    conn = await asyncpg.connect(stack.dsn, timeout=TIMEOUT_S)
    try:
        user, db = await conn.fetchrow("SELECT current_user, current_database()")
        assert (user, db) == ("tracker", "tracker")
    finally:
        await conn.close()


async def test_database_rejects_a_wrong_password(stack: StackInfo) -> None:
    wrong = stack.dsn.replace(stack.dsn.split(":")[2].split("@")[0], "wrong-password")
    assert wrong != stack.dsn
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong, timeout=TIMEOUT_S)


# --------------------------------------------------------------------------- the service started by up


def test_up_runs_the_service_unprivileged_with_its_own_secrets_only(
    stack: StackInfo, stack_process_env: dict[str, str]
) -> None:
    env = dict(stack_process_env, TRACKER_HTTP_PORT=str(free_port()), TRACKER_OPS_PORT=str(free_port()))
    run_stack(["up"], env)  # broker and database run already: this adds the service
    pid = int((stack.stack_dir / "tracker.pid").read_text())
    try:
        expected = "port-tracker" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        assert pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name == expected
        record = stack.stack_dir / "tracker.path"
        files = Path(record.read_text().strip()) if record.exists() else stack.stack_dir / "tracker"
        for name in ("tracker.log", "service.env", "signing.key"):
            st = (files / name).stat()
            assert st.st_mode & 0o077 == 0, f"{name} is readable by others"
            assert pwd.getpwuid(st.st_uid).pw_name == expected
        secrets = stack.stack_dir / "secrets.env"
        assert secrets.stat().st_mode & 0o077 == 0 and secrets.stat().st_uid == os.geteuid()
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
        own = (files / "service.env").read_text()
        for other in (stack.admin_password, stack.device_password, stack.security_password, stack.customs_password):
            assert other not in environ and other not in own, "the service holds another account's password"
        assert "TRACKER_MQTT_ADMIN" not in environ
        with urllib.request.urlopen(f"http://127.0.0.1:{env['TRACKER_OPS_PORT']}/readyz", timeout=5) as resp:
            assert resp.status == 200
        # fleet-wide counts are on the ops listener only: an API client (an insurer) cannot read them
        for path in ("/metrics", "/readyz"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{env['TRACKER_HTTP_PORT']}{path}", timeout=5)
            assert refused.value.code in (401, 404)
        assert "TRACKER_AUDIT_ANCHOR_FILE" in own
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


# --------------------------------------------------------------------------- idempotence and restart
# These run last in this module: they restart the session's stack.


async def test_infra_rerun_keeps_secrets_and_data(stack: StackInfo, stack_command: Callable[..., None]) -> None:
    conn = await asyncpg.connect(stack.owner_dsn, timeout=TIMEOUT_S)  # the service role may not create tables
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS stack_rerun_probe (note text)")
        await conn.execute("INSERT INTO stack_rerun_probe VALUES ('kept')")
    finally:
        await conn.close()
    before = (stack.stack_dir / "secrets.env").read_text()
    broker_pid = _broker_pid(stack)
    owner_before = (stack.stack_dir / "owner.env").read_text()
    key_before = stack.audit_key_file.read_bytes()

    stack_command("infra")  # everything already running
    assert (stack.stack_dir / "secrets.env").read_text() == before
    assert _broker_pid(stack) == broker_pid, "an unchanged configuration restarted the broker"
    stack_command("down")
    stack_command("infra")  # cold start on existing data
    assert (stack.stack_dir / "secrets.env").read_text() == before
    assert (stack.stack_dir / "owner.env").read_text() == owner_before
    assert stack.audit_key_file.read_bytes() == key_before

    conn = await asyncpg.connect(stack.owner_dsn, timeout=TIMEOUT_S)
    try:
        assert await conn.fetchval("SELECT count(*) FROM stack_rerun_probe WHERE note = 'kept'") == 1
        await conn.execute("DROP TABLE stack_rerun_probe")
    finally:
        await conn.close()
    with connected(stack, stack.service_user, stack.service_password) as svc:
        assert not svc.subscribe("trackers/+/ping")[0].is_failure


def _broker_dir(stack: StackInfo) -> Path:
    record = stack.stack_dir / "mosquitto.path"
    return Path(record.read_text().strip()) if record.exists() else stack.stack_dir / "mosquitto"


def _broker_pid(stack: StackInfo) -> int:
    return int((_broker_dir(stack) / "mosquitto.pid").read_text())


def test_infra_puts_back_the_fixed_roles_and_accounts(stack: StackInfo, stack_command: Callable[..., None]) -> None:
    """Rights or passwords of the fixed accounts changed at run time are restored by the next
    ``infra`` (deploy/mosquitto/dynsec_config.py); accounts added at run time are kept."""
    device_id = f"KEEP-{uuid.uuid4().hex[:6]}"
    with BrokerAdmin(stack.mqtt_host, stack.mqtt_port, stack.admin_user, stack.admin_password) as admin:
        admin.create_device(device_id, "device-password-1")
        admin.run("addRoleACL", rolename="gateway", acltype="subscribePattern", topic="alerts/#", allow=True)
        admin.set_password(stack.device_user, "changed-at-run-time")
    broker_pid = _broker_pid(stack)

    stack_command("infra")

    assert _broker_pid(stack) != broker_pid, "the broker was not restarted to load the repaired file"
    with connected(stack, stack.device_user, stack.device_password):
        pass
    with BrokerAdmin(stack.mqtt_host, stack.mqtt_port, stack.admin_user, stack.admin_password) as admin:
        role = admin.run("getRole", rolename="gateway")["role"]
        assert sorted((a["acltype"], a["topic"]) for a in role["acls"]) == [
            ("publishClientSend", "owntracks/#"),
            ("publishClientSend", "trackers/+/ping"),
        ]
        kept = admin.get(device_id)
        assert kept is not None and kept.roles == (f"device-{device_id}",)
    with connected(stack, device_id, "device-password-1"):
        pass


def test_persistent_session_survives_broker_restart(
    stack: StackInfo, stack_command: Callable[..., None], accounts: Callable[[str], Account]
) -> None:
    account = accounts("service")  # created at run time: it must survive the restart too
    device = f"TRUCK-{uuid.uuid4().hex[:6]}"
    first = _persistent_subscriber(stack, account)
    try:
        assert not first.subscribe(f"trackers/{device}/ping", qos=1)[0].is_failure
    finally:
        first.close()
    payloads = _publish_three(stack, device)

    stack_command("down")
    stack_command("infra")

    again = _persistent_subscriber(stack, account)
    try:
        assert again.session_present
        assert _receive_all(again, 3) == payloads
    finally:
        again.close()
