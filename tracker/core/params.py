"""Detector thresholds from configuration: a ``[detectors]`` table parsed into the typed, frozen params.

Every detector already takes its thresholds as a frozen dataclass (``StopParams``, ``DarkParams``, ...)
whose defaults are the documented values. This module reads a plain table (``tomllib``'s output of the
file named by ``TRACKER_DETECTORS_FILE``; the shipped example is ``geofences/detectors.toml``) into those
dataclasses, refusing at start, with the offending key named, anything it does not know or cannot
convert: a misspelt threshold silently left at its default is an alert silently not raised.

Layout: one sub-table per detector, named as its state slot (``unexpected_stop``, ``signal_lost``,
``post_inspection_access``, ``rendezvous``, ``pairing``) plus ``integrity``, ``motion`` and
``geofence``; ``[detectors.ports.<port>.<detector>]`` overrides keys for the devices in that port's
fences. Per fence kind and per device kind thresholds are tables keyed by kind
(``by_zone = { restricted = 120 }``). A detector's params that hold params of their own take them as a
sub-table, merged key by key like the detector's: ``[detectors.geofence.reach]`` is the space-time prism of
sparse fixes (``tracker.core.reachability.ReachParams``: plausible speed, judged gaps, GPS slack, how far a
fix joins the corridor graph...), ``reach = false`` switches it off. Pure: no file is read here.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, NoneType, UnionType
from typing import Any

from tracker.core import inspection, pairing, rendezvous
from tracker.core.dark import DarkParams
from tracker.core.geofence import GeofenceParams
from tracker.core.integrity import IntegrityParams
from tracker.core.motion import MotionParams
from tracker.core.stops import StopParams

__all__ = ["DetectorParams", "parse"]


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """The thresholds of every step of the pipeline; ``ports`` holds complete params per port."""

    unexpected_stop: StopParams = field(default_factory=StopParams)
    signal_lost: DarkParams = field(default_factory=DarkParams)
    post_inspection_access: inspection.AccessWindowParams = field(default_factory=inspection.AccessWindowParams)
    rendezvous: rendezvous.Params = field(default_factory=rendezvous.Params)
    pairing: pairing.Params = field(default_factory=pairing.Params)
    integrity: IntegrityParams = field(default_factory=IntegrityParams)
    motion: MotionParams = field(default_factory=MotionParams)
    geofence: GeofenceParams = field(default_factory=GeofenceParams)
    ports: Mapping[str, DetectorParams] = field(default_factory=lambda: MappingProxyType({}))

    def for_port(self, port: str | None) -> DetectorParams:
        return self if port is None else self.ports.get(port, self)


_SECTIONS = tuple(f.name for f in dataclasses.fields(DetectorParams) if f.name != "ports")


def parse(table: Mapping[str, Any], where: str = "detectors") -> DetectorParams:
    """``table``: the ``[detectors]`` table. Raises ``ValueError`` naming the first bad key."""
    base = _section_set(DetectorParams(), table, where, allow_ports=True)
    ports_raw = table.get("ports", {})
    if not isinstance(ports_raw, Mapping):
        raise ValueError(f"{where}.ports must be a table of ports")
    ports: dict[str, DetectorParams] = {}
    for port, sub in ports_raw.items():
        if not isinstance(sub, Mapping):
            raise ValueError(f"{where}.ports.{port} must be a table")
        ports[str(port)] = _section_set(base, sub, f"{where}.ports.{port}", allow_ports=False)
    return dataclasses.replace(base, ports=MappingProxyType(ports))


def _section_set(base: DetectorParams, table: Mapping[str, Any], where: str, *, allow_ports: bool) -> DetectorParams:
    changes: dict[str, Any] = {}
    for name, sub in table.items():
        if name == "ports" and allow_ports:
            continue
        if name not in _SECTIONS:
            raise ValueError(f"unknown detector {where}.{name!r} (known: {', '.join(_SECTIONS)})")
        if not isinstance(sub, Mapping):
            raise ValueError(f"{where}.{name} must be a table of thresholds")
        changes[name] = _params(getattr(base, name), sub, f"{where}.{name}")
    return dataclasses.replace(base, **changes)


def _params(current: Any, table: Mapping[str, Any], where: str) -> Any:
    cls = type(current)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    changes: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in known:
            raise ValueError(f"unknown threshold {where}.{key!r} (known: {', '.join(sorted(known))})")
        nested = _nested(hints[key])
        if nested is not None:
            changes[key] = _sub_params(nested, getattr(current, key), raw, f"{where}.{key}")
            continue
        try:
            changes[key] = _coerce(hints[key], raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad value for {where}.{key}: {exc}") from None
    try:
        return dataclasses.replace(current, **changes)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad thresholds in {where}: {exc}") from None


def _nested(hint: Any) -> tuple[type, bool] | None:
    """(the dataclass a field holds, whether it may be None) when it holds one (``X`` or ``X | None``): such a
    field's thresholds are a sub-table."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (UnionType, typing.Union) else (hint,)
    options = [a for a in args if a is not NoneType]
    if len(options) == 1 and isinstance(options[0], type) and dataclasses.is_dataclass(options[0]):
        return options[0], NoneType in args
    return None


def _sub_params(nested: tuple[type, bool], current: Any, raw: Any, where: str) -> Any:
    """A sub-table merged over the current params (their defaults when they were off). Where the field may be None,
    ``false`` turns them off and ``true`` on (with the current thresholds, or the defaults)."""
    cls, optional = nested
    if isinstance(raw, bool):
        if not optional:
            raise ValueError(f"bad value for {where}: expected a table of thresholds, got {raw!r}")
        return (current if current is not None else cls()) if raw else None
    if not isinstance(raw, Mapping):
        raise ValueError(f"bad value for {where}: expected a table of thresholds, got {raw!r}")
    return _params(current if current is not None else cls(), raw, where)


def _coerce(hint: Any, raw: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (UnionType, typing.Union):
        options = [a for a in args if a is not NoneType]
        if raw is None and NoneType in args:
            return None
        if len(options) == 1:
            return _coerce(options[0], raw)
        raise TypeError(f"unsupported type {hint}")
    if hint is bool:
        if not isinstance(raw, bool):
            raise TypeError(f"expected true or false, got {raw!r}")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise TypeError(f"expected a number, got {raw!r}")
        if raw != raw or raw < 0:
            raise ValueError(f"expected a number >= 0, got {raw!r}")
        return float(raw)
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise TypeError(f"expected a whole number >= 0, got {raw!r}")
        return raw
    if hint is str:
        if not isinstance(raw, str):
            raise TypeError(f"expected a string, got {raw!r}")
        return raw
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(raw)
    if origin in (frozenset, tuple):
        if not isinstance(raw, list):
            raise TypeError(f"expected a list, got {raw!r}")
        items = [_coerce(args[0], x) for x in raw]
        return frozenset(items) if origin is frozenset else tuple(items)
    if origin in (Mapping, dict) or origin is typing.get_origin(Mapping[str, int]):
        if not isinstance(raw, Mapping):
            raise TypeError(f"expected a table, got {raw!r}")
        return MappingProxyType({_coerce(args[0], k): _coerce(args[1], v) for k, v in raw.items()})
    raise TypeError(f"unsupported type {hint}")
