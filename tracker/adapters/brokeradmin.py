"""Broker accounts through Mosquitto's dynamic-security plugin (``tracker device add/list/revoke``).

The plugin is driven by JSON commands published on its control topic; it answers on a
response topic. Only the broker admin account (``TRACKER_MQTT_ADMIN_*``, role ``broker-admin``
in deploy/mosquitto/dynsec_config.py) may use that topic, and it may use nothing else: the
service's own account can neither create accounts nor change rights. The plugin stores
passwords as salted PBKDF2-SHA512 hashes; this module never writes a password anywhere.

Synchronous on purpose: it serves short CLI commands and test fixtures, and paho's network
thread does the waiting. The broker gives each connection its user name as client id, so two
admin sessions at once would push each other off: one command at a time.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tracker.adapters.decode import DEVICE_ID_RE
from tracker.adapters.mqtt import TlsOptions

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"

# Fixed roles written by deploy/mosquitto/dynsec_config.py.
GATEWAY_ROLE = "gateway"


class BrokerAdminError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    username: str
    roles: tuple[str, ...]
    disabled: bool


def new_password() -> str:
    """192 random bits: the plugin's hash uses few PBKDF2 rounds, so only random secrets are issued."""
    return secrets.token_urlsafe(24)


def device_role(device_id: str) -> str:
    return f"device-{device_id}"


def device_topics(device_id: str) -> tuple[str, ...]:
    """What a device's own account may publish: its ping topic, and for an OwnTracks id
    ``user.device`` the one OwnTracks topic that the service decodes to that id."""
    if not DEVICE_ID_RE.match(device_id):
        raise ValueError(f"{device_id!r} is not a valid device id")
    topics = [f"trackers/{device_id}/ping"]
    user, dot, device = device_id.partition(".")
    if dot and user and device and "." not in device:
        topics.append(f"owntracks/{user}/{device}")
    return tuple(topics)


class BrokerAdmin:
    """One admin session on the broker: ``with BrokerAdmin(...) as admin: admin.create_device(...)``."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        tls: TlsOptions | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not username or not password:
            raise BrokerAdminError(
                "the broker admin account is not configured (TRACKER_MQTT_ADMIN_USERNAME / _PASSWORD)"
            )
        self.host = host
        self.port = port
        self.timeout = timeout
        self._lock = threading.Condition()
        self._connack: str | None = None
        self._connected = False
        self._subscribed: list[bool] = []
        self._answers: dict[str, dict[str, Any]] = {}
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv5, reconnect_on_failure=False
        )
        self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls.context())
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # ---- session ----------------------------------------------------------------------------------

    def __enter__(self) -> BrokerAdmin:
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise BrokerAdminError(f"cannot reach the broker at {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        try:
            with self._lock:
                if not self._lock.wait_for(lambda: self._connack is not None, self.timeout):
                    raise BrokerAdminError("no answer from the broker to the admin login")
                if not self._connected:
                    raise BrokerAdminError(f"the broker refused the admin account: {self._connack}")
            self._client.subscribe(RESPONSE_TOPIC, qos=1)
            with self._lock:
                if not self._lock.wait_for(lambda: bool(self._subscribed), self.timeout):
                    raise BrokerAdminError("no SUBACK for the dynamic-security response topic")
                if not self._subscribed[0]:
                    raise BrokerAdminError("the admin account may not read the dynamic-security response topic")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._client.is_connected():
            self._client.disconnect()
        self._client.loop_stop()

    # ---- commands ---------------------------------------------------------------------------------

    def run(self, command: str, **fields: object) -> dict[str, Any]:
        """One plugin command; its ``data`` (or {}) or BrokerAdminError with the plugin's error."""
        correlation = uuid.uuid4().hex
        body = json.dumps({"commands": [{"command": command, "correlationData": correlation, **fields}]})
        info = self._client.publish(CONTROL_TOPIC, body, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise BrokerAdminError(f"{command}: publish failed: {paho.error_string(info.rc)}")
        with self._lock:
            if not self._lock.wait_for(lambda: correlation in self._answers, self.timeout):
                raise BrokerAdminError(
                    f"{command}: no answer from the dynamic-security plugin within {self.timeout} s"
                    " (is it loaded, and may this account use its control topic?)"
                )
            answer = self._answers.pop(correlation)
        if answer.get("error"):
            raise BrokerAdminError(f"{command}: {answer['error']}")
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    def create_role(self, name: str, publish: Iterable[str]) -> None:
        acls = [{"acltype": "publishClientSend", "topic": t, "priority": 0, "allow": True} for t in publish]
        self.run("createRole", rolename=name, acls=acls)

    def delete_role(self, name: str) -> None:
        self.run("deleteRole", rolename=name)

    def create_client(self, username: str, password: str, roles: Sequence[str], *, textname: str = "") -> None:
        self.run(
            "createClient",
            username=username,
            password=password,
            textname=textname or username,
            roles=[{"rolename": r} for r in roles],
        )

    def set_password(self, username: str, password: str) -> None:
        self.run("setClientPassword", username=username, password=password)

    def enable(self, username: str) -> None:
        self.run("enableClient", username=username)

    def disable(self, username: str) -> None:
        """Refuses further logins and disconnects the account's current connection."""
        self.run("disableClient", username=username)

    def get(self, username: str) -> BrokerAccount | None:
        try:
            data = self.run("getClient", username=username)
        except BrokerAdminError as exc:
            if "not found" in str(exc).lower():
                return None
            raise
        return _account(data.get("client"))

    def accounts(self) -> list[BrokerAccount]:
        data = self.run("listClients", verbose=True, count=-1, offset=0)
        clients = data.get("clients")
        found = [_account(c) for c in clients] if isinstance(clients, list) else []
        return [a for a in found if a is not None]

    # ---- devices ----------------------------------------------------------------------------------

    def create_device(self, device_id: str, password: str) -> tuple[str, ...]:
        """An account named after the device, allowed to publish its own topics only."""
        topics = device_topics(device_id)
        role = device_role(device_id)
        try:
            self.create_role(role, topics)
        except BrokerAdminError as exc:
            if "already exists" not in str(exc):
                raise
            # Left by an earlier half-finished add: make it say exactly what it should.
            self.delete_role(role)
            self.create_role(role, topics)
        self.create_client(device_id, password, [role], textname=f"device {device_id}")
        return topics

    # ---- paho callbacks (paho's thread) -----------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            self._connack = str(reason)
            self._connected = not reason.is_failure
            self._lock.notify_all()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        with self._lock:
            self._subscribed.append(all(not r.is_failure for r in reasons))
            self._lock.notify_all()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        responses = doc.get("responses") if isinstance(doc, dict) else None
        if not isinstance(responses, list):
            return
        with self._lock:
            for answer in responses:
                if isinstance(answer, dict) and isinstance(answer.get("correlationData"), str):
                    self._answers[answer["correlationData"]] = answer
            self._lock.notify_all()


def _account(raw: object) -> BrokerAccount | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("username"), str):
        return None
    roles = raw.get("roles")
    names = tuple(str(r.get("rolename")) for r in roles if isinstance(r, Mapping)) if isinstance(roles, list) else ()
    return BrokerAccount(raw["username"], names, bool(raw.get("disabled", False)))
