"""The broker's fixed accounts file (deploy/mosquitto/dynsec_config.py) and device account rights.

The hash format is checked against a file made by Mosquitto's own ``mosquitto_ctrl dynsec init``;
that the broker accepts what the script writes is shown by every integration test (the stack
logs in with these accounts).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tracker.adapters.brokeradmin import device_topics

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "dynsec_config.py"

ENV = {
    "TRACKER_MQTT_USERNAME": "tracker-service",
    "TRACKER_MQTT_PASSWORD": "service-pw",
    "TRACKER_MQTT_DEVICE_USERNAME": "gateway",
    "TRACKER_MQTT_DEVICE_PASSWORD": "gateway-pw",
    "TRACKER_MQTT_SECURITY_USERNAME": "security",
    "TRACKER_MQTT_SECURITY_PASSWORD": "security-pw",
    "TRACKER_MQTT_CUSTOMS_USERNAME": "customs",
    "TRACKER_MQTT_CUSTOMS_PASSWORD": "customs-pw",
    "TRACKER_MQTT_ADMIN_USERNAME": "broker-admin",
    "TRACKER_MQTT_ADMIN_PASSWORD": "admin-pw",
}


@pytest.fixture(scope="module")
def dynsec() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dynsec_config", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(path: Path, action: str, **env: str) -> int:
    proc = subprocess.run(
        ["python3", str(SCRIPT), action, str(path)], env={"PATH": "/usr/bin:/bin", **ENV, **env}, check=False
    )
    return proc.returncode


def test_password_hash_is_the_one_mosquitto_makes(dynsec: ModuleType, tmp_path: Path) -> None:
    made = tmp_path / "by-mosquitto.json"
    init = ["mosquitto_ctrl", "dynsec", "init", str(made), "someone", "s3cret-pw"]
    subprocess.run(init, check=True, capture_output=True)
    client = json.loads(made.read_text())["clients"][0]
    assert dynsec._password_matches(client, "s3cret-pw")
    assert not dynsec._password_matches(client, "s3cret-pX")
    ours = {"username": "x", **dynsec._hashed("s3cret-pw")}
    assert dynsec._password_matches(ours, "s3cret-pw")
    assert len(ours["salt"]) == len(client["salt"]) and len(ours["password"]) == len(client["password"])


def test_apply_writes_the_fixed_part_once_and_keeps_run_time_accounts(tmp_path: Path) -> None:
    path = tmp_path / "dynamic-security.json"
    assert run(path, "check") == 1
    assert run(path, "apply") == 0
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_text()
    assert "service-pw" not in first and "admin-pw" not in first
    assert run(path, "check") == 0
    assert run(path, "apply") == 0
    assert path.read_text() == first, "an up-to-date file was rewritten (the broker would restart)"

    doc = json.loads(first)
    # What the broker itself adds at run time: a device account and its role.
    doc["clients"].append({"username": "TRUCK-1", "roles": [{"rolename": "device-TRUCK-1"}], "password": "x"})
    doc["roles"].append({"rolename": "device-TRUCK-1", "acls": [{"acltype": "publishClientSend", "topic": "t"}]})
    # ... and a fixed role widened by hand.
    gateway = next(r for r in doc["roles"] if r["rolename"] == "gateway")
    gateway["acls"].append({"acltype": "subscribePattern", "topic": "#", "allow": True})
    path.write_text(json.dumps(doc))
    assert run(path, "check") == 1
    assert run(path, "apply") == 0
    doc = json.loads(path.read_text())
    assert any(c["username"] == "TRUCK-1" for c in doc["clients"])
    assert any(r["rolename"] == "device-TRUCK-1" for r in doc["roles"])
    gateway = next(r for r in doc["roles"] if r["rolename"] == "gateway")
    assert {a["topic"] for a in gateway["acls"]} == {"trackers/+/ping", "owntracks/#"}

    # A changed password in secrets.env is a new hash for that account only.
    assert run(path, "check", TRACKER_MQTT_DEVICE_PASSWORD="new-gateway-pw") == 1
    before = {c["username"]: c.get("password") for c in doc["clients"]}
    assert run(path, "apply", TRACKER_MQTT_DEVICE_PASSWORD="new-gateway-pw") == 0
    after = {c["username"]: c.get("password") for c in json.loads(path.read_text())["clients"]}
    assert [u for u in after if after[u] != before[u]] == ["gateway"]


def test_roles_keep_the_former_acl_semantics(dynsec: ModuleType) -> None:
    def grants(role: str) -> set[tuple[str, str]]:
        return {(a["acltype"], a["topic"]) for a in dynsec.ROLES[role]}

    read = {"subscribePattern", "publishClientReceive"}
    assert {t for kind, t in grants("security") if kind in read} == {"alerts/#", "tracker/audit/#"}
    assert not {t for kind, t in grants("security") if kind == "publishClientSend"}
    assert {t for kind, t in grants("customs") if kind == "publishClientSend"} == {"customs/inspections"}
    assert {t for kind, t in grants("gateway") if kind == "publishClientSend"} == {"trackers/+/ping", "owntracks/#"}
    service_writes = {t for kind, t in grants("service") if kind == "publishClientSend"}
    assert "tracker/audit/#" in service_writes and "trackers/+/ping" not in service_writes
    assert not any(t.startswith("$CONTROL") for role in ("service", "gateway", "security", "customs")
                   for _, t in grants(role))  # fmt: skip
    assert dynsec.DEFAULT_ACCESS["publishClientReceive"] is False


def test_missing_credentials_stop_the_script(tmp_path: Path) -> None:
    assert run(tmp_path / "f.json", "apply", TRACKER_MQTT_ADMIN_PASSWORD="") != 0
    assert not (tmp_path / "f.json").exists()


def test_a_device_account_gets_its_own_topics_only() -> None:
    assert device_topics("TRUCK-7") == ("trackers/TRUCK-7/ping",)
    # an OwnTracks id user.device maps to the one OwnTracks topic decoded to that id
    assert device_topics("alice.phone") == ("trackers/alice.phone/ping", "owntracks/alice/phone")
    assert device_topics("a.b.c") == ("trackers/a.b.c/ping",)
    for bad in ("", "+", "a/b", "#", "x" * 65, "-lead"):
        with pytest.raises(ValueError):
            device_topics(bad)
