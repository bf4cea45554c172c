"""Settings: defaults, layering, validation, and the README staying in step with the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracker.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_are_the_local_stack() -> None:
    s = Settings.from_env({})
    assert (s.mqtt_host, s.mqtt_port, s.http_port) == ("127.0.0.1", 1883, 8080)
    assert s.db_dsn.endswith("@127.0.0.1:5433/tracker")
    assert s.unknown_devices == "reject"


def test_env_overrides_toml_which_overrides_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "tracker.toml"
    toml.write_text('[tracker]\nmqtt_port = 1999\nhttp_port = 9000\nping_topics = ["a/+/ping"]\n')
    s = Settings.from_env({"TRACKER_CONFIG": str(toml), "TRACKER_HTTP_PORT": "9100"})
    assert s.mqtt_port == 1999
    assert s.http_port == 9100
    assert s.ping_topics == ("a/+/ping",)


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    toml = tmp_path / "tracker.toml"
    toml.write_text("[tracker]\nmqtt_prot = 1\n")
    with pytest.raises(ValueError, match="mqtt_prot"):
        Settings.from_env({"TRACKER_CONFIG": str(toml)})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRACKER_MQTT_PORT": "abc"}, "mqtt_port"),
        ({"TRACKER_UNKNOWN_DEVICES": "maybe"}, "UNKNOWN_DEVICES"),
        ({"TRACKER_BATCH_MAX": "0"}, "BATCH_MAX"),
    ],
)
def test_bad_values_are_rejected_with_the_setting_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_secrets_are_redacted() -> None:
    s = Settings.from_env(
        {
            "TRACKER_MQTT_PASSWORD": "hunter2",
            "TRACKER_ADMIN_TOKEN": "tok",
            "TRACKER_DB_DSN": "postgresql://tracker:s3cret@127.0.0.1:5433/tracker",
        }
    )
    text = str(s.redacted())
    assert "hunter2" not in text
    assert "tok'" not in text
    assert "s3cret" not in text


def test_readme_documents_every_setting() -> None:
    readme = README.read_text()
    for env, default, _doc in Settings.describe():
        assert f"| `{env}` | `{default}` |" in readme, f"{env} missing or stale in README"


def test_tls_settings_and_their_validation() -> None:
    assert not Settings.from_env({}).mqtt_tls_enabled
    s = Settings.from_env({"TRACKER_MQTT_TLS_CA": "/etc/ca.pem", "TRACKER_MQTT_TLS_INSECURE": "true"})
    assert s.mqtt_tls_enabled and s.mqtt_tls_insecure
    assert Settings.from_env({"TRACKER_MQTT_TLS": "yes"}).mqtt_tls_enabled
    assert not Settings.from_env({"TRACKER_MQTT_TLS": "0"}).mqtt_tls
    with pytest.raises(ValueError, match="mqtt_tls"):
        Settings.from_env({"TRACKER_MQTT_TLS": "perhaps"})
    with pytest.raises(ValueError, match="TLS_KEY"):
        Settings.from_env({"TRACKER_MQTT_TLS": "true", "TRACKER_MQTT_TLS_KEY": "/k.pem"})
    with pytest.raises(ValueError, match="need TLS"):
        Settings.from_env({"TRACKER_MQTT_TLS_CERT": "/c.pem"})


def test_the_session_client_id_is_the_account_name_unless_set() -> None:
    assert Settings.from_env({"TRACKER_MQTT_USERNAME": "svc"}).mqtt_session_client_id == "svc"
    assert Settings.from_env({}).mqtt_session_client_id == "port-tracker-ingest"
    fixed = Settings.from_env({"TRACKER_MQTT_CLIENT_ID": "x", "TRACKER_MQTT_USERNAME": "svc"})
    assert fixed.mqtt_session_client_id == "x"


def test_the_broker_admin_password_is_redacted() -> None:
    s = Settings.from_env({"TRACKER_MQTT_ADMIN_USERNAME": "broker-admin", "TRACKER_MQTT_ADMIN_PASSWORD": "hunter3"})
    assert "hunter3" not in str(s.redacted())


def test_audit_settings_parse_and_their_secrets_are_redacted() -> None:
    s = Settings.from_env(
        {
            "TRACKER_AUDIT_UNSIGNED": "yes",
            "TRACKER_AUDIT_KEY": "ab" * 32,
            "TRACKER_DB_OWNER_DSN": "postgresql://tracker_owner:0wn3r@127.0.0.1:5433/tracker",
        }
    )
    assert s.audit_unsigned is True
    text = str(s.redacted())
    assert "ab" * 32 not in text
    assert "0wn3r" not in text
    assert Settings.from_env({"TRACKER_AUDIT_UNSIGNED": "0"}).audit_unsigned is False
    with pytest.raises(ValueError, match="audit_unsigned"):
        Settings.from_env({"TRACKER_AUDIT_UNSIGNED": "perhaps"})
    with pytest.raises(ValueError, match="not both"):
        Settings.from_env({"TRACKER_AUDIT_KEY": "x", "TRACKER_AUDIT_KEY_FILE": "/k"})
