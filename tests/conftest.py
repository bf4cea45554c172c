"""Shared fixtures.

Integration tests (everything under tests/integration) run against a real Mosquitto
broker and a real PostgreSQL cluster, started once per session by ``deploy/stack.sh infra``
in a temporary stack directory on free loopback ports, and destroyed afterwards. The broker
also has a TLS listener whose CA, server and client certificates are made here with openssl.

The broker gives each connection its account name as client id, so two connections of one
account push each other off: tests that connect concurrently, or need a session of their own,
get fresh accounts (``accounts`` fixture, created through the dynamic-security plugin).
The schema is migrated once, by ``tracker migrate`` as the owner role, the way
``deploy/stack.sh up`` does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tracker.adapters.brokeradmin import BrokerAdmin, new_password

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_SCRIPT = REPO_ROOT / "deploy" / "stack.sh"
INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
BROWSER_DIR = Path(__file__).resolve().parent / "browser"

STACK_TIMEOUT_S = 300


@dataclass(frozen=True)
class StackInfo:
    mqtt_host: str
    mqtt_port: int
    dsn: str
    service_user: str
    service_password: str
    device_user: str
    device_password: str
    security_user: str
    security_password: str
    customs_user: str
    customs_password: str
    admin_user: str
    admin_password: str
    admin_token: str
    stack_dir: Path
    owner_dsn: str  # the schema owner: migrations, and tests playing an insider with more than the service's rights
    superuser_dsn: str  # only to create and drop scratch databases
    audit_key_file: Path
    tls_port: int
    tls: TlsFiles


@dataclass(frozen=True)
class TlsFiles:
    """A test CA, the broker's certificate for 127.0.0.1, and a client certificate from a
    second CA that the broker requires on its TLS listener."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # trusted by nobody


@dataclass(frozen=True)
class Account:
    username: str
    password: str


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
        elif item.path.is_relative_to(BROWSER_DIR):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.browser)


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def run_stack(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs deploy/stack.sh; raises with its output when it fails."""
    try:
        proc = subprocess.run(
            ["bash", str(STACK_SCRIPT), *command],
            env=env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STACK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"deploy/stack.sh {' '.join(command)} timed out after {STACK_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"deploy/stack.sh {' '.join(command)} failed with exit code {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


@dataclass(frozen=True)
class _StackHandle:
    env: dict[str, str]
    stack_dir: Path
    tls: TlsFiles


def _stack_process_env(stack_dir: Path, mqtt_port: int, pg_port: int, tls_port: int, tls: TlsFiles) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(
        TRACKER_STACK_DIR=str(stack_dir),
        TRACKER_MQTT_PORT=str(mqtt_port),
        TRACKER_PG_PORT=str(pg_port),
        TRACKER_PG_DB="tracker",
        TRACKER_PG_USER="tracker",
        TRACKER_MQTT_TLS_PORT=str(tls_port),
        TRACKER_BROKER_TLS_CERT=str(tls.server_cert),
        TRACKER_BROKER_TLS_KEY=str(tls.server_key),
        TRACKER_BROKER_TLS_CLIENT_CA=str(tls.client_ca),
    )
    return env


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(cwd: Path, name: str) -> None:
    _openssl(
        cwd, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", f"/CN=port-tracker test {name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def _make_cert(cwd: Path, ca: str, name: str, cn: str, extensions: list[str]) -> None:
    _openssl(
        cwd, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
    )  # fmt: skip
    (cwd / f"{name}.ext").write_text("\n".join(extensions) + "\n")
    _openssl(
        cwd, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
    )  # fmt: skip


def make_test_tls(directory: Path) -> TlsFiles:
    """Self-signed CAs and certificates for one test session (valid two days)."""
    for ca in ("ca", "client-ca", "other-ca"):
        _make_ca(directory, ca)
    _make_cert(
        directory, "ca", "server", "localhost",
        ["subjectAltName=DNS:localhost,IP:127.0.0.1", "basicConstraints=CA:FALSE", "extendedKeyUsage=serverAuth"],
    )  # fmt: skip
    _make_cert(
        directory, "client-ca", "client", "port-tracker test client",
        ["basicConstraints=CA:FALSE", "extendedKeyUsage=clientAuth"],
    )  # fmt: skip
    d = directory
    return TlsFiles(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client-ca.pem", d / "client.pem", d / "client.key",
        d / "other-ca.pem",
    )  # fmt: skip


@pytest.fixture(scope="session")
def stack_handle() -> Iterator[_StackHandle]:
    """Starts broker + database once per session; destroys them at the end.

    Failing to start is an error of the tests, never a skip.
    """
    stack_dir = Path(tempfile.mkdtemp(prefix="port-tracker-stack-", dir="/tmp"))
    # The postgres / mosquitto system users must reach it when tests run as root.
    stack_dir.chmod(0o755)
    tls_dir = Path(tempfile.mkdtemp(prefix="port-tracker-tls-", dir="/tmp"))
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    mqtt_port, pg_port, tls_port = sorted(ports)
    tls = make_test_tls(tls_dir)
    env = _stack_process_env(stack_dir, mqtt_port, pg_port, tls_port, tls)
    handle = _StackHandle(env=env, stack_dir=stack_dir, tls=tls)
    reaper = _start_reaper(env)
    try:
        run_stack(["infra"], env)
        yield handle
    finally:
        try:
            run_stack(["destroy", "--yes"], env)
        finally:
            reaper.kill()
            reaper.wait()
            shutil.rmtree(stack_dir, ignore_errors=True)
            shutil.rmtree(tls_dir, ignore_errors=True)


def _start_reaper(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Destroys the stack if this pytest process dies without its teardown (killed by a
    timeout, SIGKILL...). It runs in its own session so that it outlives a process-group kill."""
    script = 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec bash "$2" destroy --yes'
    return subprocess.Popen(
        ["bash", "-c", script, "stack-reaper", str(os.getpid()), str(STACK_SCRIPT)],
        env=env,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stack_info(handle: _StackHandle) -> StackInfo:
    secrets = parse_env_file(handle.stack_dir / "secrets.env")
    owner = parse_env_file(handle.stack_dir / "owner.env")
    pg = parse_env_file(handle.stack_dir / "postgres.secrets")
    port = handle.env["TRACKER_PG_PORT"]
    return StackInfo(
        mqtt_host="127.0.0.1",
        mqtt_port=int(handle.env["TRACKER_MQTT_PORT"]),
        dsn=secrets["TRACKER_DB_DSN"],
        service_user=secrets["TRACKER_MQTT_USERNAME"],
        service_password=secrets["TRACKER_MQTT_PASSWORD"],
        device_user=secrets["TRACKER_MQTT_DEVICE_USERNAME"],
        device_password=secrets["TRACKER_MQTT_DEVICE_PASSWORD"],
        security_user=secrets["TRACKER_MQTT_SECURITY_USERNAME"],
        security_password=secrets["TRACKER_MQTT_SECURITY_PASSWORD"],
        customs_user=secrets["TRACKER_MQTT_CUSTOMS_USERNAME"],
        customs_password=secrets["TRACKER_MQTT_CUSTOMS_PASSWORD"],
        admin_user=secrets["TRACKER_MQTT_ADMIN_USERNAME"],
        admin_password=secrets["TRACKER_MQTT_ADMIN_PASSWORD"],
        admin_token=secrets["TRACKER_ADMIN_TOKEN"],
        stack_dir=handle.stack_dir,
        tls_port=int(handle.env["TRACKER_MQTT_TLS_PORT"]),
        tls=handle.tls,
        owner_dsn=owner["TRACKER_DB_OWNER_DSN"],
        superuser_dsn=f"postgresql://postgres:{pg['PG_SUPERUSER_PASSWORD']}@127.0.0.1:{port}/postgres",
        audit_key_file=Path(secrets["TRACKER_AUDIT_KEY_FILE"]),
    )


def run_migrate(dsn: str, owner_dsn: str) -> None:
    """``tracker migrate`` as the schema owner, granting the service role of ``dsn`` its rights."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(TRACKER_DB_DSN=dsn, TRACKER_DB_OWNER_DSN=owner_dsn)
    proc = subprocess.run(
        [sys.executable, "-m", "tracker", "migrate"],
        env=env,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STACK_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0 or "granted its rights" not in proc.stdout:
        raise RuntimeError(f"tracker migrate failed ({proc.returncode})\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="session")
def stack(stack_handle: _StackHandle) -> StackInfo:
    """The running broker + migrated database and the credentials of every account."""
    info = _stack_info(stack_handle)
    run_migrate(info.dsn, info.owner_dsn)
    return info


def create_account(host: str, port: int, admin_user: str, admin_password: str, role: str) -> Account:
    """A fresh broker account with one of the fixed roles (service, gateway, security, customs)."""
    account = Account(f"{role}-{uuid.uuid4().hex[:10]}", new_password())
    with BrokerAdmin(host, port, admin_user, admin_password) as admin:
        admin.create_client(account.username, account.password, [role])
    return account


@pytest.fixture(scope="session")
def accounts(stack: StackInfo) -> Callable[[str], Account]:
    """``accounts(role)``: a new broker account of that role, for this test alone."""

    def new(role: str) -> Account:
        return create_account(stack.mqtt_host, stack.mqtt_port, stack.admin_user, stack.admin_password, role)

    return new


@pytest.fixture(scope="session")
def stack_process_env(stack_handle: _StackHandle) -> dict[str, str]:
    """Environment under which ``deploy/stack.sh`` manages the session's stack."""
    return dict(stack_handle.env)


@pytest.fixture(scope="session")
def stack_command(stack_handle: _StackHandle) -> Callable[..., None]:
    """Runs ``deploy/stack.sh <args>`` on the session's stack; raises when it fails."""

    def run(*args: str) -> None:
        run_stack(list(args), stack_handle.env)

    return run


@pytest.fixture(scope="session")
def stack_env(stack: StackInfo) -> dict[str, str]:
    """TRACKER_* variables for a service (or CLI) talking to the session's stack."""
    secrets = parse_env_file(stack.stack_dir / "secrets.env")
    env = {k: v for k, v in secrets.items() if k.startswith("TRACKER_") and "PG_" not in k}
    env.update(
        TRACKER_DB_DSN=stack.dsn,
        TRACKER_MQTT_HOST=stack.mqtt_host,
        TRACKER_MQTT_PORT=str(stack.mqtt_port),
        TRACKER_MQTT_USERNAME=stack.service_user,
        TRACKER_MQTT_PASSWORD=stack.service_password,
        TRACKER_ADMIN_TOKEN=stack.admin_token,
    )
    return env
