#!/usr/bin/env python3
"""Writes the fixed part of Mosquitto's dynamic-security configuration for port-tracker.

The broker's accounts and rights live in the dynamic-security plugin's JSON file, which the
plugin itself rewrites whenever an account is added at run time (``tracker device add``).
This script owns only the fixed part: the roles below, the default access and the five
accounts whose credentials are in the environment. Every other account and role (per-device
accounts, extra gateways) is left exactly as the broker saved it.

    dynsec_config.py check FILE   exit 0 if FILE already says what it should, 1 if not
    dynsec_config.py apply FILE   bring FILE up to date (created with mode 600 if missing)

Credentials come from the environment, never from argv (which other users can read in ps):
TRACKER_MQTT_{,DEVICE_,SECURITY_,CUSTOMS_,ADMIN_}{USERNAME,PASSWORD}.

The password hashes are those of the plugin (salted PBKDF2-HMAC-SHA512, base64, 12-byte salt,
64-byte hash); a stored hash that still matches the password is kept, so an unchanged
configuration is byte-for-byte stable and the broker need not restart. Only the standard
library is used: this runs before any virtualenv exists, and in the Compose broker-init step.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import tempfile

SALT_LEN = 12  # mosquitto 2.0 src/password_mosq.h
HASH_LEN = 64  # SHA-512
ITERATIONS = 101  # what mosquitto 2.0.11 itself uses (PW_DEFAULT_ITERATIONS); see deploy/README.md

# "read" is subscribing and receiving, "write" is publishing: the semantics of the former
# mosquitto ACL file. Everything not granted is denied (see DEFAULT_ACCESS).
READ = ("subscribePattern", "publishClientReceive")
WRITE = ("publishClientSend",)


def _acls(read: tuple[str, ...] = (), write: tuple[str, ...] = ()) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for topic in read:
        out += [{"acltype": t, "topic": topic, "priority": 0, "allow": True} for t in READ]
    for topic in write:
        out += [{"acltype": t, "topic": topic, "priority": 0, "allow": True} for t in WRITE]
    return out


ROLES: dict[str, list[dict[str, object]]] = {
    # The tracking service: consumes positions and inspections; produces alerts, rejections,
    # dead letters, its status (also its last will) and the retained audit checkpoint.
    "service": _acls(
        read=("trackers/+/ping", "owntracks/#", "customs/inspections"),
        write=("alerts/#", "trackers/+/rejected", "deadletter/#", "tracker/status", "tracker/audit/#"),
    ),
    # Shared relay account of gateways that forward many devices: positions of any device.
    "gateway": _acls(write=("trackers/+/ping", "owntracks/#")),
    # Security desk: listens to alerts and to the audit checkpoint.
    "security": _acls(read=("alerts/#", "tracker/audit/#")),
    # Customs system: announces finished inspections.
    "customs": _acls(write=("customs/inspections",)),
    # Account administration (tracker device add/revoke): the plugin's control topic only,
    # no application topic at all.
    "broker-admin": [
        {"acltype": "publishClientSend", "topic": "$CONTROL/dynamic-security/v1", "priority": 0, "allow": True},
        {
            "acltype": "subscribePattern",
            "topic": "$CONTROL/dynamic-security/v1/response",
            "priority": 0,
            "allow": True,
        },
        {
            "acltype": "publishClientReceive",
            "topic": "$CONTROL/dynamic-security/v1/response",
            "priority": 0,
            "allow": True,
        },
    ],
}

# The plugin's own default lets every client receive whatever it managed to subscribe to;
# here receiving must be granted too, like "read" in the former ACL file.
DEFAULT_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}

# environment prefix -> role of that fixed account
ACCOUNTS = {
    "TRACKER_MQTT_": "service",
    "TRACKER_MQTT_DEVICE_": "gateway",
    "TRACKER_MQTT_SECURITY_": "security",
    "TRACKER_MQTT_CUSTOMS_": "customs",
    "TRACKER_MQTT_ADMIN_": "broker-admin",
}


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_LEN)


def _password_matches(client: dict[str, object], password: str) -> bool:
    try:
        salt = base64.b64decode(str(client["salt"]), validate=True)
        stored = base64.b64decode(str(client["password"]), validate=True)
        iterations = int(str(client["iterations"]))
    except (KeyError, ValueError):
        return False
    if len(salt) != SALT_LEN or iterations < 1:
        return False
    return hmac.compare_digest(stored, _pbkdf2(password, salt, iterations))


def _hashed(password: str) -> dict[str, object]:
    salt = secrets.token_bytes(SALT_LEN)
    return {
        "password": base64.b64encode(_pbkdf2(password, salt, ITERATIONS)).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": ITERATIONS,
    }


def _acl_key(acl: dict[str, object]) -> tuple[str, str, bool, int]:
    return (
        str(acl.get("acltype", "")).lower(),
        str(acl.get("topic", "")),
        bool(acl.get("allow")),
        int(str(acl.get("priority", 0))),
    )


def _accounts_from_env() -> list[tuple[str, str, str]]:
    out = []
    for prefix, role in ACCOUNTS.items():
        user = os.environ.get(prefix + "USERNAME", "")
        password = os.environ.get(prefix + "PASSWORD", "")
        if not user or not password:
            raise SystemExit(f"dynsec_config: {prefix}USERNAME and {prefix}PASSWORD must be set")
        out.append((user, password, role))
    if len({u for u, _, _ in out}) != len(out):
        raise SystemExit("dynsec_config: the fixed accounts need distinct user names")
    return out


def desired(current: dict[str, object], accounts: list[tuple[str, str, str]]) -> dict[str, object]:
    """``current`` with the fixed part replaced; everything else kept as it is."""
    roles = [r for r in _list(current, "roles") if r.get("rolename") not in ROLES]
    roles += [{"rolename": name, "acls": acls} for name, acls in ROLES.items()]
    fixed = {user: (password, role) for user, password, role in accounts}
    clients = []
    for client in _list(current, "clients"):
        user = str(client.get("username", ""))
        if user not in fixed:
            clients.append(client)
            continue
        password, role = fixed.pop(user)
        keep = _password_matches(client, password)
        new: dict[str, object] = {"username": user, "textname": f"port-tracker {role} account"}
        new["roles"] = [{"rolename": role}]
        new.update({k: client[k] for k in ("password", "salt", "iterations")} if keep else _hashed(password))
        clients.append(new)
    for user, (password, role) in fixed.items():
        clients.append(
            {"username": user, "textname": f"port-tracker {role} account", "roles": [{"rolename": role}]}
            | _hashed(password)
        )
    out = dict(current)
    out.update(clients=clients, roles=roles, groups=_list(current, "groups"), defaultACLAccess=dict(DEFAULT_ACCESS))
    return out


def _list(doc: dict[str, object], key: str) -> list[dict[str, object]]:
    value = doc.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def in_sync(current: dict[str, object], accounts: list[tuple[str, str, str]]) -> bool:
    """True if the fixed part of ``current`` already says what it should (as the broker saved it)."""
    if current.get("defaultACLAccess") != DEFAULT_ACCESS:
        return False
    roles = {str(r.get("rolename")): r for r in _list(current, "roles")}
    for name, acls in ROLES.items():
        have = roles.get(name)
        if have is None or sorted(map(_acl_key, _list(have, "acls"))) != sorted(map(_acl_key, acls)):
            return False
    clients = {str(c.get("username")): c for c in _list(current, "clients")}
    for user, password, role in accounts:
        client = clients.get(user)
        if client is None or client.get("disabled") or client.get("clientid"):
            return False
        if [str(r.get("rolename")) for r in _list(client, "roles")] != [role]:
            return False
        if not _password_matches(client, password):
            return False
    return True


def _load(path: str) -> dict[str, object]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return {}
    if not isinstance(doc, dict):
        raise SystemExit(f"dynsec_config: {path} is not a JSON object")
    return doc


def _write(path: str, doc: dict[str, object]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".dynsec-", dir=directory)  # mode 600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent="\t")
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("check", "apply"):
        print(__doc__, file=sys.stderr)
        return 2
    action, path = argv
    accounts = _accounts_from_env()
    current = _load(path)
    if in_sync(current, accounts):
        return 0
    if action == "check":
        return 1
    _write(path, desired(current, accounts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
