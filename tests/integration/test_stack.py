"""The development stack itself: broker ACLs, authentication, persistent sessions, database.

Runs against the real Mosquitto and PostgreSQL started by the ``stack`` fixture.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

if TYPE_CHECKING:
    from tests.conftest import StackInfo

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


def _persistent_subscriber(stack: StackInfo, client_id: str) -> Client:
    client = Client(stack, stack.service_user, stack.service_password, client_id=client_id, v5=True)
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


def test_persistent_session_gets_messages_sent_while_away(stack: StackInfo) -> None:
    client_id = f"tracker-test-{uuid.uuid4().hex[:8]}"
    device = f"TRUCK-{uuid.uuid4().hex[:6]}"
    first = _persistent_subscriber(stack, client_id)
    try:
        assert not first.subscribe(f"trackers/{device}/ping", qos=1)[0].is_failure
    finally:
        first.close()

    payloads = _publish_three(stack, device)

    again = _persistent_subscriber(stack, client_id)
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
    owner_before = (stack.stack_dir / "owner.env").read_text()
    key_before = stack.audit_key_file.read_bytes()

    stack_command("infra")  # everything already running
    assert (stack.stack_dir / "secrets.env").read_text() == before
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


def test_persistent_session_survives_broker_restart(stack: StackInfo, stack_command: Callable[..., None]) -> None:
    client_id = f"tracker-test-{uuid.uuid4().hex[:8]}"
    device = f"TRUCK-{uuid.uuid4().hex[:6]}"
    first = _persistent_subscriber(stack, client_id)
    try:
        assert not first.subscribe(f"trackers/{device}/ping", qos=1)[0].is_failure
    finally:
        first.close()
    payloads = _publish_three(stack, device)

    stack_command("down")
    stack_command("infra")

    again = _persistent_subscriber(stack, client_id)
    try:
        assert again.session_present
        assert _receive_all(again, 3) == payloads
    finally:
        again.close()
