"""What one principal may see: the organisation-and-role rules every route, count and feed applies.

One ``Scope`` is carried by each authenticated ``Principal``. Routes ask it one question per
object (``sees_device``, ``sees_container``, ``sees_port``, ``sees_alert``) and answer an object
it does not see exactly as they answer a missing one (404), so a token learns nothing about what
lies outside its organisation. Lists and counts are filtered with the same questions.

The rules, by role:

- ``admin``: everything.
- ``operator``: its organisation's fleet: devices whose organisation is its own (devices with no
  organisation belong to ``default``); alerts of those devices; containers whose trackers are in it.
- ``security`` / ``customs``: the ports of its organisation (``organisations.ports``; NULL: every
  port): alerts raised in them, devices whose last fix is inside one of their fences, containers
  whose trackers are such devices.
- ``insurer``: its organisation's coverage: each covered container for its validity dates, the
  container's own trackers for those dates, and the trucks that carried it (from the pairings)
  for the part of a haul inside the dates. Tokens made before organisations existed may also
  name devices directly (``api_tokens.scope.devices``): those are seen without date limits.

Device ownership and position are read live from the service (``Directory``), so a device
registered or moved shows at once; an insurer's coverage windows are computed when its token is
looked up (cached for ``TRACKER_API_TOKEN_CACHE_TTL_S``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Protocol

DEFAULT_ORG = "default"
ROLES = ("operator", "insurer", "security", "admin", "customs")
PORT_ROLES = frozenset({"security", "customs"})

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
Window = tuple[datetime, datetime]
"""A half-open validity interval [start, end)."""
UNBOUNDED: Window = (EARLIEST, LATEST)


class Directory(Protocol):
    """Live lookups the rules need about devices, answered from the service's in-memory maps."""

    def device_org(self, device_id: str) -> str:
        """The organisation owning the device (``default`` for devices nobody claimed)."""
        ...

    def device_ports(self, device_id: str) -> frozenset[str]:
        """The ports whose fences hold the device's last fix (empty: outside every fence or unseen)."""
        ...

    def container_devices(self, container_no: str) -> Sequence[str]:
        """The trackers riding on a container."""
        ...

    def devices_of(self, org: str) -> list[str]:
        """The devices an organisation other than the default owns."""
        ...


@dataclass(frozen=True, slots=True)
class StaticDirectory:
    """A ``Directory`` over fixed maps (tests, tools without a running service)."""

    orgs: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, frozenset[str]] = field(default_factory=dict)
    containers: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def device_org(self, device_id: str) -> str:
        return self.orgs.get(device_id, DEFAULT_ORG)

    def device_ports(self, device_id: str) -> frozenset[str]:
        return self.ports.get(device_id, frozenset())

    def container_devices(self, container_no: str) -> Sequence[str]:
        return self.containers.get(container_no, ())

    def devices_of(self, org: str) -> list[str]:
        return [d for d, o in self.orgs.items() if o == org]


EMPTY_DIRECTORY = StaticDirectory()


def _inside(windows: Iterable[Window], at: datetime | None) -> bool:
    if at is None:
        return any(True for _ in windows)
    return any(lo <= at < hi for lo, hi in windows)


def alert_devices(alert: Mapping[str, object]) -> list[str]:
    """The device an alert is filed under and any other it names (a meeting names both)."""
    out: list[str] = []
    dev = alert.get("device_id")
    if isinstance(dev, str):
        out.append(dev)
    evidence = alert.get("evidence")
    if isinstance(evidence, Mapping):
        devices = evidence.get("devices")
        if isinstance(devices, list):
            for item in devices:
                if isinstance(item, Mapping) and isinstance(item.get("id"), str) and item["id"] not in out:
                    out.append(str(item["id"]))
    return out


def _alert_time(alert: Mapping[str, object]) -> datetime | None:
    raw = alert.get("ts")
    if isinstance(raw, datetime):
        return raw
    if isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError:
            return None
        return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True, slots=True)
class Scope:
    """The view of one token: its role, its organisation and what follows from them."""

    role: str
    org: str | None = DEFAULT_ORG
    ports: frozenset[str] | None = None  # security/customs: None is every port
    directory: Directory = EMPTY_DIRECTORY
    coverage: Mapping[str, tuple[Window, ...]] = field(default_factory=lambda: MappingProxyType({}))
    """insurer: container number -> its validity windows."""
    device_windows: Mapping[str, tuple[Window, ...]] = field(default_factory=lambda: MappingProxyType({}))
    """insurer: device -> the windows it is seen in (trackers of covered containers, trucks that carried them)."""
    devices: frozenset[str] | None = None
    """insurer tokens from before organisations: devices seen at any time (None: none such)."""

    @property
    def everything(self) -> bool:
        return self.role == "admin"

    def sees_device(self, device_id: str, at: datetime | None = None) -> bool:
        """Whether the device (at ``at``, or at some time when None) is in view."""
        if self.role == "admin":
            return True
        if self.role == "operator":
            return self.directory.device_org(device_id) == self.org
        if self.role in PORT_ROLES:
            if self.ports is None:
                return True
            return bool(self.directory.device_ports(device_id) & self.ports)
        if self.role == "insurer":
            if self.devices is not None and device_id in self.devices:
                return True
            return _inside(self.device_windows.get(device_id, ()), at)
        return False

    def sees_container(self, container_no: str, at: datetime | None = None) -> bool:
        if self.role == "admin":
            return True
        if self.role == "insurer":
            if _inside(self.coverage.get(container_no, ()), at):
                return True
            return self.devices is not None and any(
                d in self.devices for d in self.directory.container_devices(container_no)
            )
        if self.role in PORT_ROLES and self.ports is None:
            return True
        return any(self.sees_device(d, at) for d in self.directory.container_devices(container_no))

    def sees_port(self, port: str | None) -> bool:
        """Whether things filed under ``port`` (None: under no port) are in view by port.

        Only security and customs desks are limited by port; insurers see containers, not ports,
        and are refused a port as such.
        """
        if self.role in PORT_ROLES:
            return self.ports is None or (port is not None and port in self.ports)
        if self.role == "insurer":
            return port is None
        return True

    def sees_alert(self, alert: Mapping[str, object]) -> bool:
        """An alert as the API serialises it (``device_id``, ``port``, ``ts``, ``evidence``)."""
        if self.role == "admin":
            return True
        port = alert.get("port")
        if self.role in PORT_ROLES:
            return self.sees_port(port if isinstance(port, str) else None)
        at = _alert_time(alert) if self.role == "insurer" else None
        if self.role == "insurer" and at is None:
            return False
        return any(self.sees_device(d, at) for d in alert_devices(alert))

    def windows(self, container_no: str) -> list[Window]:
        """When the container is in view: an insurer's coverage dates; for the others one unbounded window."""
        if self.role == "insurer":
            if self.devices is not None and any(
                d in self.devices for d in self.directory.container_devices(container_no)
            ):
                return [UNBOUNDED]
            return sorted(self.coverage.get(container_no, ()))
        return [UNBOUNDED]

    def candidate_devices(self) -> frozenset[str] | None:
        """A superset of the devices in view when it is small enough to narrow a query (None: no narrowing).

        Queries use it to fetch less; every row is still judged by the ``sees_*`` questions.
        """
        if self.role == "operator" and self.org != DEFAULT_ORG and self.org is not None:
            return frozenset(self.directory.devices_of(self.org))
        if self.role == "insurer":
            return frozenset(self.device_windows) | (self.devices or frozenset())
        return None

    def candidate_ports(self) -> frozenset[str] | None:
        """The ports a port-limited desk sees (None: not limited by port)."""
        return self.ports if self.role in PORT_ROLES else None

    def device_time_windows(self, device_id: str) -> list[Window]:
        """When the device's data is in view (clips an insurer's position queries to its coverage)."""
        if self.role == "insurer" and not (self.devices is not None and device_id in self.devices):
            return sorted(self.device_windows.get(device_id, ()))
        return [UNBOUNDED] if self.sees_device(device_id) else []


def everything() -> Scope:
    return Scope("admin", None)


def clip(windows: Iterable[Window], start: datetime, end: datetime) -> list[Window]:
    """The parts of ``windows`` inside [start, end), merged and in order."""
    parts = sorted((max(lo, start), min(hi, end)) for lo, hi in windows if lo < end and hi > start)
    merged: list[Window] = []
    for lo, hi in parts:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


@dataclass(frozen=True, slots=True)
class Haul:
    """A truck carrying a container tracker from ``since`` to ``until`` (None: still carrying)."""

    container_device: str
    truck_id: str
    since: datetime
    until: datetime | None


def insurer_windows(
    coverage: Iterable[tuple[str, datetime, datetime]],
    trackers: Callable[[str], Sequence[str]],
    hauls: Iterable[Haul],
) -> tuple[dict[str, tuple[Window, ...]], dict[str, tuple[Window, ...]]]:
    """(container -> windows, device -> windows) of an insurer's coverage.

    A container's trackers are seen for the coverage dates; a truck for the part of each haul of a
    covered tracker that falls inside those dates.
    """
    by_container: dict[str, list[Window]] = {}
    for container_no, lo, hi in coverage:
        by_container.setdefault(container_no, []).append((lo, hi))
    by_device: dict[str, list[Window]] = {}
    tracker_windows: dict[str, list[Window]] = {}
    for container_no, wins in by_container.items():
        for dev in trackers(container_no):
            tracker_windows.setdefault(dev, []).extend(wins)
            by_device.setdefault(dev, []).extend(wins)
    for haul in hauls:
        covered = tracker_windows.get(haul.container_device)
        if not covered:
            continue
        by_device.setdefault(haul.truck_id, []).extend(clip(covered, haul.since, haul.until or LATEST))
    return (
        {c: tuple(clip(w, EARLIEST, LATEST)) for c, w in by_container.items()},
        {d: tuple(clip(w, EARLIEST, LATEST)) for d, w in by_device.items() if w},
    )


@dataclass(slots=True)
class LiveDirectory:
    """A ``Directory`` over the service's own maps, read at each question (never a stale copy).

    ``fences_of(device)`` gives the fence ids the device's last fix is inside; ``fence_port``
    the port of a fence id. The maps are changed by the single writer only.
    """

    orgs: Mapping[str, str]
    fences_of: Callable[[str], Iterable[str]]
    fence_port: Callable[[str], str | None]
    containers: Mapping[str, Sequence[str]]

    def device_org(self, device_id: str) -> str:
        return self.orgs.get(device_id, DEFAULT_ORG)

    def device_ports(self, device_id: str) -> frozenset[str]:
        ports = (self.fence_port(f) for f in self.fences_of(device_id))
        return frozenset(p for p in ports if p is not None)

    def container_devices(self, container_no: str) -> Sequence[str]:
        return self.containers.get(container_no, ())

    def devices_of(self, org: str) -> list[str]:
        """The devices an organisation other than the default owns."""
        return [d for d, o in self.orgs.items() if o == org]
