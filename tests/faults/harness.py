"""What a fault scenario drives: its own broker and database, the service as a real process, devices.

Every fault here is one an operator would see: the service process killed with SIGKILL, the
broker restarted, PostgreSQL stopped, the database turned read-only or refusing inserts, a
publisher outrunning the service, and garbage on the ping topics. Nothing is mocked: the
broker and the database are the ones ``deploy/stack.sh infra`` starts, the service is
``tracker run`` in its own process, and devices are plain MQTT clients.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import asyncpg
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    REPO_ROOT,
    Account,
    StackInfo,
    _stack_info,
    _stack_process_env,
    _StackHandle,
    _start_reaper,
    create_account,
    free_port,
    make_test_tls,
    parse_env_file,
    run_migrate,
    run_stack,
)
from tracker.sim.rawmqtt import Packet, count_pubacks, read_packets
from tracker.sim.rawmqtt import string as _string
from tracker.sim.rawmqtt import varint as _varint

SANTOS = REPO_ROOT / "geofences" / "ports" / "santos.geojson"
HTTP_TIMEOUT_S = 15.0


# ---- the stack -------------------------------------------------------------------------------------


@dataclass
class FaultStack:
    """A broker and a database of the fault scenarios' own, which they may stop, restart and break.

    Kept apart from the integration tests' stack: a scenario that fails half-way (a database left
    read-only, a broker left stopped) must not take other tests down with it.
    """

    handle: _StackHandle
    info: StackInfo

    @property
    def stack_dir(self) -> Path:
        return self.handle.stack_dir

    @classmethod
    @contextmanager
    def started(cls) -> Iterator[FaultStack]:
        stack_dir = Path(tempfile.mkdtemp(prefix="port-tracker-faults-", dir="/tmp"))
        stack_dir.chmod(0o755)  # the postgres and mosquitto users must reach it when run as root
        tls_dir = Path(tempfile.mkdtemp(prefix="port-tracker-faults-tls-", dir="/tmp"))
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        mqtt_port, pg_port, tls_port = sorted(ports)
        tls = make_test_tls(tls_dir)
        env = _stack_process_env(stack_dir, mqtt_port, pg_port, tls_port, tls)
        handle = _StackHandle(env=env, stack_dir=stack_dir, tls=tls)
        reaper = _start_reaper(handle.env)
        try:
            run_stack(["infra"], handle.env)
            info = _stack_info(handle)
            run_migrate(info.dsn, info.owner_dsn)  # as the schema owner: the service never migrates
            yield cls(handle, info)
        finally:
            try:
                run_stack(["destroy", "--yes"], handle.env)
            finally:
                reaper.kill()
                reaper.wait()
                shutil.rmtree(stack_dir, ignore_errors=True)
                shutil.rmtree(tls_dir, ignore_errors=True)

    def account(self, role: str) -> Account:
        """A broker account of its own (the broker makes the account name the client id, so two
        connections on one account push each other off)."""
        info = self.info
        return create_account(info.mqtt_host, info.mqtt_port, info.admin_user, info.admin_password, role)

    # ---- credentials and environments

    def service_env(self, **overrides: str) -> dict[str, str]:
        """TRACKER_* variables of a service on this stack, with a service account (and so a persistent
        session) of its own; the broker admin account is not given to it, as in production."""
        secrets = parse_env_file(self.stack_dir / "secrets.env")
        env = {
            k: v
            for k, v in secrets.items()
            if k.startswith("TRACKER_") and "PG_" not in k and not k.startswith("TRACKER_MQTT_ADMIN_")
        }
        service = self.account("service")
        env.update(
            TRACKER_MQTT_USERNAME=service.username,
            TRACKER_MQTT_PASSWORD=service.password,
            TRACKER_DB_DSN=self.info.dsn,
            TRACKER_MQTT_HOST=self.info.mqtt_host,
            TRACKER_MQTT_PORT=str(self.info.mqtt_port),
            TRACKER_HTTP_HOST="127.0.0.1",
            TRACKER_FENCE_FILES=str(SANTOS),
        )
        env.update(overrides)
        return env

    def superuser_dsn(self) -> str:
        """The cluster superuser, kept by deploy/stack.sh in postgres.secrets (never exported)."""
        secrets = parse_env_file(self.stack_dir / "postgres.secrets")
        port = self.handle.env["TRACKER_PG_PORT"]
        db = self.handle.env["TRACKER_PG_DB"]
        return f"postgresql://postgres:{secrets['PG_SUPERUSER_PASSWORD']}@127.0.0.1:{port}/{db}"

    # ---- the broker

    def _broker_pid(self) -> int | None:
        mq_dir = Path((self.stack_dir / "mosquitto.path").read_text().strip())
        try:
            return int((mq_dir / "mosquitto.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def broker_rss_kib(self) -> int | None:
        pid = self._broker_pid()
        return None if pid is None else rss_kib(pid)

    def stop_broker(self, timeout: float = 20.0) -> None:
        """SIGTERM, as an orderly restart does: Mosquitto writes its persistence file on the way out."""
        pid = self._broker_pid()
        if pid is None or not _alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto (pid {pid}) did not stop within {timeout} s")
            time.sleep(0.05)

    def start_infra(self) -> None:
        """``deploy/stack.sh infra``: starts whichever of broker and database is not running (and
        re-applies the database roles, as every ``up`` does)."""
        run_stack(["infra"], self.handle.env)

    def start_broker(self, timeout: float = 15.0) -> None:
        """Mosquitto again on its rendered configuration, as deploy/stack.sh starts it, and nothing else."""
        mq_dir = Path((self.stack_dir / "mosquitto.path").read_text().strip())
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        # the way deploy/stack.sh starts it: its own session, detached from this process entirely
        script = 'setsid nohup "$1" -c "$2" </dev/null >>"$3" 2>&1 &'
        subprocess.run(
            [
                "bash",
                "-c",
                script,
                "start-broker",
                binary,
                str(mq_dir / "mosquitto.conf"),
                str(mq_dir / "mosquitto.log"),
            ],
            check=True,
            timeout=30,
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.info.mqtt_port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen within {timeout} s")
            time.sleep(0.05)

    def start_database(self) -> None:
        """``pg_ctl start`` on the stack's cluster, and nothing else."""
        self._pg_ctl("-l", str(self._pgdata().parent / "postgresql.log"), "-w", "-t", "60", "start")

    # ---- the database

    def _pgdata(self) -> Path:
        return Path((self.stack_dir / "pgdata.path").read_text().strip())

    def stop_database(self) -> None:
        """``pg_ctl stop -m fast``: every connection is cut and the port closes, as when the server goes down."""
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop")

    def _pg_ctl(self, *args: str) -> None:
        bindir = Path("/usr/lib/postgresql/15/bin")
        if not (bindir / "pg_ctl").exists():
            bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
        cmd = [str(bindir / "pg_ctl"), "-D", str(self._pgdata()), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, cwd="/", check=True, capture_output=True, timeout=90)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# ---- the service as a process ------------------------------------------------------------------------


@dataclass
class Http:
    status: int | None
    body: Any
    seconds: float
    error: str | None = None


class ServiceProcess:
    """``tracker run`` in a process of its own, so that it can be killed with SIGKILL like a real one.

    Every started one is known (``started``) until it is stopped, so that a scenario cut short (its time
    limit) can be made to leave none behind: a service left running stays subscribed on the shared broker
    and stores, and dead-letters, a copy of every later scenario's messages."""

    started: ClassVar[set[ServiceProcess]] = set()

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.http_port = int(self.env.setdefault("TRACKER_HTTP_PORT", str(free_port())))
        if self.http_port == 0:
            self.http_port = free_port()
            self.env["TRACKER_HTTP_PORT"] = str(self.http_port)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._reaper: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running(), "already running"
        exe = Path(sys.executable).with_name("tracker")
        cmd = [str(exe), "run"] if exe.exists() else [sys.executable, "-m", "tracker", "run"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
        env.update(self.env)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts + 1} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.starts += 1
        ServiceProcess.started.add(self)
        # kills the service if this process dies without its teardown (the stack's reaper handles the rest)
        script = (
            'while kill -0 "$2" 2>/dev/null; do if ! kill -0 "$1" 2>/dev/null; then kill -9 "$2"; exit; fi;'
            " sleep 1; done"
        )
        self._reaper = subprocess.Popen(
            ["bash", "-c", script, "service-reaper", str(os.getpid()), str(self.proc.pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    async def wait_ready(self, timeout: float = 60.0, *, draining: bool = False) -> float:
        """Seconds until /readyz answers 200 (database and broker reachable, ingest keeping up).

        ``draining``: a restarted service that the broker hands a backlog of old fixes is up once its
        database and broker checks pass; its ingest check says "behind" until the backlog is drained,
        which the scenarios measure separately."""
        began = time.monotonic()
        while True:
            if not self.running():
                raise AssertionError(f"the service exited during start-up\n{self.log_tail()}")
            answer = await self.get("/readyz", timeout=2.0)
            checks = answer.body.get("checks") if isinstance(answer.body, dict) else None
            up = isinstance(checks, dict) and checks.get("database") is True and checks.get("broker") is True
            if answer.status == 200 or (draining and up):
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise AssertionError(f"/readyz did not answer 200 within {timeout} s: {answer}\n{self.log_tail()}")
            await asyncio.sleep(0.2)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reap()

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
        self._reap()
        return self.proc.returncode

    def _reap(self) -> None:
        ServiceProcess.started.discard(self)
        if self._reaper is not None:
            with contextlib.suppress(ProcessLookupError):
                self._reaper.kill()
            self._reaper.wait()
            self._reaper = None

    @classmethod
    async def stop_all(cls) -> list[ServiceProcess]:
        """Stop every service still running (SIGTERM, then SIGKILL); returns those that were."""
        left = [svc for svc in list(cls.started) if svc.running()]
        for svc in list(cls.started):
            await svc.stop()
        return left

    def rss_kib(self) -> int | None:
        return rss_kib(self.pid) if self.running() else None

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.pid) if self.running() else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no service log)"
        return "--- service log (last lines)\n" + "\n".join(text[-lines:])

    def log_count(self, needle: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(needle)
        except OSError:
            return 0

    # ---- HTTP

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        timeout: float = HTTP_TIMEOUT_S,
    ) -> Http:
        """One HTTP call; a timeout or a refused connection is an answer too (status None)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        began = time.monotonic()
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
                http.request(method, self.base + path, json=json_body, headers=headers) as r,
            ):
                raw = await r.read()
                body: Any = raw.decode(errors="replace")
                if r.content_type == "application/json":
                    with contextlib.suppress(ValueError):
                        body = await r.json()
                return Http(r.status, body, time.monotonic() - began)
        except TimeoutError:
            return Http(None, None, time.monotonic() - began, f"no answer within {timeout} s")
        except aiohttp.ClientError as exc:
            return Http(None, None, time.monotonic() - began, f"{type(exc).__name__}: {exc}")

    async def get(self, path: str, *, token: str | None = None, timeout: float = HTTP_TIMEOUT_S) -> Http:
        return await self.request("GET", path, token=token, timeout=timeout)

    async def metrics(self) -> dict[str, float] | None:
        """/metrics as {sample name{labels}: value}; None when it does not answer 200."""
        answer = await self.get("/metrics", timeout=5.0)
        if answer.status != 200 or not isinstance(answer.body, str):
            return None
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(answer.body):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
        return out


def metric_sum(metrics: dict[str, float] | None, name: str) -> float:
    """Sum of a metric over all its label sets (0 when absent)."""
    if not metrics:
        return 0.0
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


# ---- MQTT clients ----------------------------------------------------------------------------------


def _client(account: Account, *, clean: bool = True, inflight: int = 1000) -> paho.Client:
    # the broker uses the account name as client id whatever we send; sending it keeps that visible
    c = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=account.username, protocol=paho.MQTTv311, clean_session=clean
    )
    c.username_pw_set(account.username, account.password)
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(1, 2)
    return c


def _connect(c: paho.Client, stack: StackInfo, timeout: float = 10.0) -> None:
    c.connect(stack.mqtt_host, stack.mqtt_port, keepalive=30)
    c.loop_start()
    deadline = time.monotonic() + timeout
    while not c.is_connected():
        if time.monotonic() > deadline:
            c.loop_stop()
            raise RuntimeError("cannot connect to the broker")
        time.sleep(0.01)


Message = tuple[str, bytes, bool]
"""(topic, payload, retain) as a device publishes it."""


class Publisher:
    """A device gateway publishing QoS 1 on its own thread at a set pace.

    A message counts as sent once the broker acknowledged it (PUBACK). paho keeps every
    unacknowledged message and sends it again after a reconnect, as a real gateway does, so a
    broker restart delays messages but loses none of those the publisher was given.

    It also keeps their order, as a gateway flushing its buffer does: after a disconnect the devices'
    messages go on at their pace (``published`` counts them) but are held back from paho until it is
    connected again and the broker has acknowledged everything handed to it before (:meth:`_in_order`).
    """

    def __init__(self, stack: StackInfo, account: Account) -> None:
        self.client = _client(account)
        self._lock = threading.Lock()
        self.acked = 0
        self.published = 0
        self._handed = 0  # of ``published``, those given to paho (the rest are held back after a disconnect)
        self._disconnects = 0
        self._resynced = 0
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        _connect(self.client, stack)
        self._thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.started_at = 0.0
        self.finished_at = 0.0

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: object, props: object) -> None:
        with self._lock:
            self.acked += 1

    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        with self._lock:
            self._disconnects += 1

    def _in_order(self) -> bool:
        """Whether paho may be given new messages now: no disconnect since the last time it was in step, or it is
        connected again and every message handed to it is acknowledged.

        paho sends a message published after its reconnect has sent CONNECT but before the CONNACK at once, while the
        unacknowledged ones are sent again only on the CONNACK (the race eclipse-paho/paho.mqtt.python issue 910
        reports for a first connect): the newest fixes overtake the backlog of the outage. A stream packs many seconds
        of event time into one (14 at the CI size), so a few milliseconds of that race on a loaded machine put a
        device's fix a minute ahead of the ones before it, beyond the service's reorder window, which then (as
        designed) only stores and flags those as late, and the alerts differ from what the content raises in order.
        Devices that keep their order are what the scenarios assume; holding new messages back gives it.
        """
        while True:
            with self._lock:
                seen, caught_up = self._disconnects, self.acked >= self._handed
            if seen == self._resynced:
                return True
            if not (caught_up and self.client.is_connected()):
                return False
            self._resynced = seen  # and checked again: a disconnect meanwhile means holding back once more

    def _hand(self, topic: str, payload: bytes, retain: bool) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"publish refused by paho: {paho.error_string(info.rc)}")
        self._handed += 1

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self._hand(topic, payload, retain)
        self.published += 1

    def _run(self, messages: Sequence[Message], rate: float | None) -> None:
        self.started_at = time.monotonic()
        held: collections.deque[Message] = collections.deque()
        for i, message in enumerate(messages):
            if self.stop_event.is_set():
                break
            if rate and i % 20 == 0:
                ahead = self.started_at + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            # paho's queue is unbounded: keep it short so the pace is the broker's, not the queue's
            while self.published - self.acked > 5000 and not self.stop_event.is_set():
                time.sleep(0.001)
            held.append(message)
            self.published += 1
            while held and self._in_order():
                self._hand(*held.popleft())
        while held and not self.stop_event.is_set():  # the end of the stream came during an outage
            if self._in_order():
                self._hand(*held.popleft())
            else:
                time.sleep(0.005)
        self.finished_at = time.monotonic()

    def start(self, messages: Sequence[Message], rate: float | None = None) -> None:
        """Publish in the background (``rate`` messages per second, or as fast as possible)."""
        self._thread = threading.Thread(target=self._run, args=(messages, rate), name="faults-publisher", daemon=True)
        self._thread.start()

    def done_publishing(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    async def wait_published(self, timeout: float) -> None:
        assert self._thread is not None
        await asyncio.to_thread(self._thread.join, timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the publisher did not finish within {timeout} s ({self.published} published)")

    async def wait_acked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.acked < self.published:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def close(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(10)
        self.client.disconnect()
        self.client.loop_stop()


class RawPublisher:
    """MQTT 3.1.1 over a plain socket, PUBLISH frames encoded before the clock starts.

    At thousands of messages per second paho spends tens of microseconds of Python per message;
    on a 2-core machine that is taken from the service under test and would make "twice the
    sustainable rate" mean something else. Here a paced send is a ``sendall`` of ready bytes
    every few milliseconds and a reader thread counts PUBACKs. No reconnects: the scenarios that
    use it do not stop the broker.
    """

    def __init__(self, stack: StackInfo, account: Account) -> None:
        import socket

        self.sock = socket.create_connection((stack.mqtt_host, stack.mqtt_port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = (
            _string("MQTT")
            + bytes([4, 0x80 | 0x40 | 0x02])
            + (0).to_bytes(2, "big")  # keepalive off: the broker does not expect pings from this client
            + _string(account.username)
            + _string(account.username)
            + _string(account.password)
        )
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        connack = self.sock.recv(4)
        if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"CONNECT refused: {connack!r}")
        self.sock.settimeout(None)
        self.acked = 0
        self.published = 0
        self.started_at = 0.0
        self.finished_at = 0.0
        self.stop_event = threading.Event()
        self._reader = threading.Thread(target=self._read, name="faults-raw-acks", daemon=True)
        self._reader.start()
        self._thread: threading.Thread | None = None

    @staticmethod
    def encode(messages: Sequence[Message]) -> list[bytes]:
        frames = []
        for i, (topic, payload, retain) in enumerate(messages):
            pid = i % 65535 + 1
            var = _string(topic) + pid.to_bytes(2, "big") + payload
            frames.append(bytes([0x32 | (1 if retain else 0)]) + _varint(len(var)) + var)
        return frames

    def _read(self) -> None:
        def count(_buf: bytes, found: list[Packet]) -> None:
            self.acked += count_pubacks(found)

        read_packets(self.sock, count)

    def _run(self, frames: Sequence[bytes], rate: float | None) -> None:
        self.started_at = time.monotonic()
        i = 0
        while i < len(frames) and not self.stop_event.is_set():
            due = len(frames) if not rate else min(len(frames), int((time.monotonic() - self.started_at) * rate) + 1)
            # packet ids come round every 65,535 messages: never reuse one that may still be in flight
            due = min(due, self.acked + 30_000)
            if due > i:
                self.sock.sendall(b"".join(frames[i:due]))
                self.published = due
                i = due
            else:
                time.sleep(0.002)
        self.finished_at = time.monotonic()

    def start(self, frames: Sequence[bytes], rate: float | None = None) -> None:
        self._thread = threading.Thread(target=self._run, args=(frames, rate), name="faults-raw-pub", daemon=True)
        self._thread.start()

    def done_publishing(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    async def wait_acked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.acked < self.published or not self.done_publishing():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def close(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")
        self.sock.close()
        self._reader.join(5)


@dataclass
class AlertListener:
    """The security desk on ``alerts/#`` with a persistent session (QoS 1): it misses nothing while
    the broker restarts, and counts how often each alert was announced."""

    stack: StackInfo
    account: Account
    raised: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: paho.Client | None = None

    def start(self) -> None:
        import json

        c = _client(self.account, clean=False)

        def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
            try:
                body = json.loads(msg.payload)
            except ValueError:
                return
            if isinstance(body, dict) and body.get("event") == "raised":
                with self._lock:
                    key = str(body.get("id"))
                    self.raised[key] = self.raised.get(key, 0) + 1

        def on_connect(client: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
            client.subscribe("alerts/#", qos=1)

        c.on_message = on_message
        c.on_connect = on_connect
        _connect(c, self.stack)
        self._client = c

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.raised)

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            discard_session(self.stack, self.account)
            self._client = None


def discard_session(stack: StackInfo, account: Account) -> None:
    """Connect once with a clean session: the broker drops the client's persistent session and its queue,
    so a finished scenario leaves no session collecting every later scenario's messages."""
    c = _client(account, clean=True)
    try:
        _connect(c, stack)
    except RuntimeError:
        return
    c.disconnect()
    c.loop_stop()


# ---- the database, read from outside ---------------------------------------------------------------


async def connect_db(dsn: str, timeout: float = 10.0) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=timeout)
