"""The one codec of per-device state: msgpack through msgspec, at the store boundary only.

The core keeps states as typed objects between fixes; this module turns a whole
:class:`~tracker.core.state.DeviceState` into bytes once per batch (the ``device_state`` row)
and back once at restore. Structs are encoded as arrays (no field names) and trailing
defaults are left out; timestamps are msgpack's own timestamp extension (microseconds
exact, UTC). The encoding is exact: nothing is rounded, so a restored state is the very
state the process had and a restart changes no verdict.

The reorder log (``DeviceState.log``) keeps, per recent fix, the fix and the whole state before
it. Stored as such it was three quarters of a device's bytes, so an entry is written as only
what a replay needs and cannot re-derive:

- the fix without its device id, source and receive time (the state's own id; the core never
  reads the other two, and ``Entry.of`` drops them in memory too), its time as microseconds
  after the fix before it;
- the alerts it raised as kind, severity, port and fence (device and message are the state's
  or not needed, see ``Entry``), with the common key ``"<fence>@<time>"`` re-derived;
- the state before it as a difference from the state after it (the next entry's ``before``, or
  the current state for the newest): only the fields that differ, recursing into the detectors'
  Structs, so a fix that moved the end of a trip stores that end, not the trip; a detector's sliding list
  (recent fixes, reporting intervals) as the items it dropped since and a length.

A pairing declaration in the window (``state.Declared``) is an entry of the same chain: its place in time as
``dt``, the state before it as a difference, and ``pair`` (the truck and how far its declared time lies before its
place), which a fix's entry never has.

The whole record is then compressed with zstd on a preset dictionary (``codec_dict``, trained by
bench/state_dict.py on simulator and synthetic states): what is left repeats itself within a row (fence
ids, the fix's time and position in several detectors) and across rows (field layout, fence ids, detector
and alert names), and the dictionary holds the latter once for every row. Against deflate (the layout
before) it takes a third to a quarter of the CPU per row, and the simulator replay's states are 913 B per
device instead of 1,202, the synthetic fleet's 261 B instead of 559. Equal states give equal bytes
(``order="deterministic"`` sorts sets and maps; zstd is deterministic for one input, level and dictionary).

Compatibility: fields are only ever appended (with a default) to a state Struct, never
reordered or removed, so a state written by an older version still decodes. Rows of the deflate
layout (the same msgpack, deflated) decode whole, window included; rows written before the compact
window (uncompressed msgpack) decode with their state and without their reorder window, which only
means a straggler within 30 s of the upgrade is flagged ``late`` instead of replayed. Rows written before
declarations were logged have no ``pair`` in any entry and decode as before.
"""

from __future__ import annotations

import functools
import zlib
from datetime import datetime, timedelta
from itertools import compress
from operator import is_not
from typing import Any, TypeVar

import msgspec
import zstandard
from msgspec.structs import astuple, replace

from tracker.core.codec_dict import DICTIONARIES
from tracker.core.model import Alert, AlertUpdate, Ping, Severity
from tracker.core.state import Declared, DeviceState, Entry

_US = timedelta(microseconds=1)
_S = TypeVar("_S", bound=msgspec.Struct)
_LEVEL = 3
"""zstd level. On the simulator's and the synthetic fleet's states with the dictionary: level 1 was barely faster and
3 % larger, level 6 5 % smaller and four times slower; the service writes every busy device once per batch."""
_ZSTD = b"\x28\xb5\x2f\xfd"
"""zstd's frame magic, the first bytes of every row this version writes."""
_ZLIB = b"\x78"
"""The first byte of every zlib stream at the default window (the layout before zstd, same msgpack inside);
msgpack rows of the older layout start with an array header (0x9N) and JSON rows with ``{``, so none mix up."""


class _Alert(msgspec.Struct, array_like=True, omit_defaults=True):
    """A logged alert (``Entry``): the message is not kept, nor the device id when it is the state's own;
    ``derived`` means the key is ``"<fence id>@<time>"`` followed by ``key``; ``dt`` is its time in µs after
    its fix's."""

    kind: str
    severity: Severity
    port: str | None = None
    fence_id: str | None = None
    derived: bool = False
    key: str = ""
    dt: int = 0
    device_id: str | None = None  # None: the state's own (a fix may raise a meeting's alert for its partner too)


class _Update(msgspec.Struct, array_like=True, omit_defaults=True):
    alert: _Alert
    dt: int = 0  # µs after its fix
    closes: bool = False


class _Pair(msgspec.Struct, array_like=True, omit_defaults=True):
    """A logged pairing declaration (``state.Declared``): the truck (``None``: the haul ended) and its declared
    time as µs before its place in the window (0 but for a backdated one)."""

    truck: str | None = None
    back: int = 0


class _Logged(msgspec.Struct, array_like=True, omit_defaults=True):
    dt: int  # µs after the entry before it (the first: after ``_Stored.t0``)
    lon: float
    lat: float
    before: list[Any] = []  # the difference from the state after it (see ``_diff``)
    alerts: tuple[_Alert, ...] = ()
    updates: tuple[_Update, ...] = ()
    speed: float | None = None
    heading: float | None = None
    accuracy: float | None = None
    events: tuple[str, ...] = ()
    pair: _Pair | None = None
    """Set for a declaration, not a fix. Appended last, so rows without declarations keep their bytes; its
    ``lon`` and ``lat`` are the container's last position before it, so a version before declarations were
    logged, reading one after a rollback, takes it for a repeat of the position the box already had."""


class _Stored(msgspec.Struct, array_like=True, omit_defaults=True):
    state: DeviceState  # without its log
    t0: datetime | None = None  # the oldest logged fix's time
    log: tuple[_Logged, ...] = ()


class _Legacy(msgspec.Struct, array_like=True):
    """The layout before this one: the state, then a reorder log this version does not read."""

    state: DeviceState
    log: msgspec.Raw = msgspec.Raw(b"\x90")


_DICTS = {
    d.dict_id(): d
    for d in (zstandard.ZstdCompressionDict(b, dict_type=zstandard.DICT_TYPE_FULLDICT) for b in DICTIONARIES)
}
_DICT = list(_DICTS.values())[-1] if _DICTS else None
"""Rows are written on the newest dictionary and name it in their frame header; the older ones stay readable."""

_CCTX: list[zstandard.ZstdCompressor] = []
_DCTX: dict[int, list[zstandard.ZstdDecompressor]] = {}
"""Idle contexts. A context is not safe for two threads at once (the service encodes a batch in a worker thread
while the event loop may encode a retried one), and a fresh one per row cost more than the compression: each caller
takes one (``list.pop`` and ``append`` are atomic) and gives it back."""


def _compress(raw: bytes) -> bytes:
    try:
        cctx = _CCTX.pop()
    except IndexError:  # (none idle: checking first would race with another thread's pop)
        cctx = zstandard.ZstdCompressor(level=_LEVEL, dict_data=_DICT, write_checksum=False)
    try:
        return cctx.compress(raw)
    finally:
        _CCTX.append(cctx)


_MAX_ROW = 1 << 22
"""The largest decompressed state accepted (4 MiB, thousands of times a real one): a row is read from a database an
insider may write to, and a frame declaring gigabytes must be refused, not allocated."""


def _decompress(data: bytes) -> bytes:
    params = zstandard.get_frame_parameters(data)
    dict_id = params.dict_id
    if dict_id and dict_id not in _DICTS:
        raise msgspec.DecodeError(f"a stored state on a dictionary this version does not hold ({dict_id})")
    if params.content_size > _MAX_ROW:  # CONTENTSIZE_UNKNOWN is larger still: rows this codec writes declare it
        raise msgspec.DecodeError(f"a stored state declaring {params.content_size} B decompressed")
    idle = _DCTX.setdefault(dict_id, [])
    try:
        dctx = idle.pop()
    except IndexError:
        dctx = zstandard.ZstdDecompressor(dict_data=_DICTS.get(dict_id))
    try:
        return dctx.decompress(data)
    finally:
        idle.append(dctx)


_ENCODER = msgspec.msgpack.Encoder(order="deterministic")  # sets and maps sorted: equal states give equal bytes
_DECODER = msgspec.msgpack.Decoder(_Stored)
_LEGACY = msgspec.msgpack.Decoder(_Legacy)


_EXACT = frozenset({str, int, bool, datetime, type(None)})
"""Types whose equal values encode alike. Others may not: -0.0 == 0.0, and so do a fix or a tuple holding them."""


_SMALL = 4
"""A Struct of this many fields or fewer (a ``Fix``: time and position) is stored whole when it differs: its
difference would be nearly as long, and diffing it was a quarter of the diff's calls."""


def _diff(before: msgspec.Struct, after: msgspec.Struct) -> list[Any]:
    """The fields of ``before`` that differ from ``after``'s, flat as ``[key, value, ...]`` in field order:
    key ``i`` -> field i's value, ``~i`` -> the difference (this form) of two Structs of one type in field i, or
    ``[i]`` -> ``[head, n]``: field i is ``head`` followed by the first ``n`` items of the later state's field i.
    The last form is for the detectors' sliding windows (recent fixes, reporting intervals): between two fixes
    such a list drops its oldest item and gains a newest, and stored whole it was most of a logged entry.

    Values of different types (0 and 0.0) differ, and so do -0.0 and 0.0 (equal as numbers, but the restored
    state must be the very state, sign of zero included). A list, not a map: the deterministic encoder sorts
    only maps with string keys."""
    out: list[Any] = []
    old, new = astuple(before), astuple(after)
    # only the fields that are not the very same object (most are: a step replaces what it changes), picked in C
    for i in compress(range(len(old)), map(is_not, old, new)):
        a, b = old[i], new[i]
        if type(a) is not type(b):
            out += (i, a)
        elif isinstance(a, msgspec.Struct) and len(a.__struct_fields__) > _SMALL:
            sub = _diff(a, b)
            if sub:
                out += (~i, sub)
        elif a != b or (type(a) not in _EXACT and _ENCODER.encode(a) != _ENCODER.encode(b)):
            slid = _slide(a, b) if type(a) is tuple or type(a) is list else None
            if slid is None:
                out += (i, a)
            else:
                out += ([i], slid)
    return out


def _slide(a: list[Any] | tuple[Any, ...], b: list[Any] | tuple[Any, ...]) -> list[Any] | None:
    """``[head, n]`` with ``a == head + b[:n]`` item for item, byte for byte once encoded, if ``a`` is ``b`` slid on by
    up to two items (the oldest dropped, newer ones appended) and that saves something; else None."""
    for s in range(min(3, len(a) - 1)):
        n = len(a) - s
        if n >= 2 and n <= len(b) and a[s:] == b[:n]:
            head = list(a[:s])
            if _ENCODER.encode(a) == _ENCODER.encode([*head, *b[:n]]):  # (equal is not enough: -0.0 == 0.0)
                return [head, n]
            return None
    return None


@functools.cache
def _fields(cls: type[msgspec.Struct]) -> tuple[msgspec.structs.FieldInfo, ...]:
    return msgspec.structs.fields(cls)


def _apply(after: _S, diff: list[Any]) -> _S:
    """``after`` with ``diff`` (from :func:`_diff`) applied: the ``before`` it was taken from."""
    fields = _fields(type(after))
    changes: dict[str, Any] = {}
    for k, v in zip(diff[::2], diff[1::2], strict=True):
        if type(k) is list:
            f = fields[k[0]]
            head, n = v
            later = getattr(after, f.name)
            changes[f.name] = type(later)([*msgspec.convert(head, f.type), *later[:n]])
        elif k >= 0:
            f = fields[k]
            changes[f.name] = msgspec.convert(v, f.type)
        else:
            f = fields[~k]
            changes[f.name] = _apply(getattr(after, f.name), v)
    return replace(after, **changes)


def _micros(a: datetime, b: datetime) -> int:
    return (a - b) // _US


def _alert(a: Alert, device_id: str, at: datetime) -> _Alert:
    prefix = f"{a.fence_id}@{a.ts.isoformat()}"
    derived = a.key.startswith(prefix)
    key = a.key[len(prefix) :] if derived else a.key
    other = None if a.device_id == device_id else a.device_id
    return _Alert(a.kind, a.severity, a.port, a.fence_id, derived, key, _micros(a.ts, at), other)


def _unalert(a: _Alert, device_id: str, at: datetime) -> Alert:
    ts = at + a.dt * _US
    key = f"{a.fence_id}@{ts.isoformat()}{a.key}" if a.derived else a.key
    return Alert(a.kind, a.severity, a.device_id or device_id, ts, "", a.port, a.fence_id, {}, key)


class _Written:
    """One window entry as last written: what it was diffed against, and its msgpack bytes after a given fix time
    (the entry before it, or ``t0`` for the oldest: its ``dt`` is counted from there)."""

    __slots__ = ("after", "entry", "item", "raw")

    def __init__(self, entry: Entry | Declared, after: msgspec.Struct, item: _Logged) -> None:
        self.entry, self.after, self.item = entry, after, item
        self.raw: tuple[datetime, msgspec.Raw] | None = None  # (the time dt counts from, the item's msgpack)


_MEMO: dict[str, dict[int, _Written]] = {}
"""Per device, the written form of each logged entry at its last encoding. The service writes a device's state
once per batch, and between two batches its window gains a fix or two while the other entries stay the very
objects they were: at one fix a second a 30 s window re-diffed and re-packed in full cost ~400 µs per write,
more than the core spent on the device's fixes. A hit needs the same entry object (held here, so its id cannot
be reused) and an ``after`` equal to the one it was diffed against, and the bytes are re-packed whenever the
entry's ``dt`` changed, so the output never depends on the memo; it holds at most the entries of each device's
last written window."""


class _StoredOut(msgspec.Struct, array_like=True, omit_defaults=True):
    """:class:`_Stored` as written: the same msgpack, with each logged entry's bytes packed beforehand."""

    state: DeviceState
    t0: datetime | None = None
    log: tuple[msgspec.Raw, ...] = ()


def _same(a: msgspec.Struct, b: msgspec.Struct) -> bool:
    """Equal and encoding to the same bytes: ``-0.0 == 0.0``, so equality alone would let the memo reuse a
    difference that rebuilds a zero with the other sign (both encodings are C loops, still cheaper than a diff)."""
    return a == b and _ENCODER.encode(a) == _ENCODER.encode(b)


def encode(state: DeviceState) -> bytes:
    """The ``device_state`` row of ``state``: its msgpack (``pack``) in a zstd frame on the preset dictionary."""
    return _compress(pack(state))


def pack(state: DeviceState) -> bytes:
    """The msgpack of ``state`` (``_Stored``), before compression: what the dictionary is trained on."""
    dev = state.device_id
    if not state.log:
        _MEMO.pop(dev, None)
        return _ENCODER.encode(_Stored(state))
    bare = replace(state, log=())
    after: msgspec.Struct = bare
    seen = _MEMO.get(dev, {})
    memo: dict[int, _Written] = {}
    written: list[_Written] = []
    for entry in reversed(state.log):
        hit = seen.get(id(entry))
        if hit is not None and hit.entry is entry and (hit.after is after or _same(hit.after, after)):
            # (equal: the newest entry was diffed against the state then current, which the next fix's entry
            # holds as an equal copy; comparing is a C loop, diffing a Python one)
            w = hit
            w.after = after
        elif isinstance(entry, Declared):
            where = entry.before.last
            w = _Written(
                entry,
                after,
                _Logged(
                    0,
                    0.0 if where is None else where.lon,
                    0.0 if where is None else where.lat,
                    _diff(entry.before, after),
                    pair=_Pair(entry.truck, _micros(entry.ts, entry.at)),
                ),
            )
        else:
            p = entry.ping
            w = _Written(
                entry,
                after,
                _Logged(
                    0,
                    p.lon,
                    p.lat,
                    _diff(entry.before, after),
                    tuple(_alert(a, dev, p.ts) for a in entry.alerts),
                    tuple(_Update(_alert(u.alert, dev, p.ts), _micros(u.ts, p.ts), u.closes) for u in entry.updates),
                    p.speed,
                    p.heading,
                    p.accuracy,
                    p.events,
                ),
            )
        memo[id(entry)] = w
        written.append(w)
        after = entry.before
    _MEMO[dev] = memo
    written.reverse()
    t0 = _ts(state.log[0])
    prev = t0
    raws: list[msgspec.Raw] = []
    for w in written:
        ts = _ts(w.entry)
        raw = w.raw
        if raw is None or raw[0] != prev:  # (the oldest entry's changes as the window slides)
            w.item.dt = _micros(ts, prev)
            raw = w.raw = (prev, msgspec.Raw(_ENCODER.encode(w.item)))
        prev = ts
        raws.append(raw[1])
    return _ENCODER.encode(_StoredOut(bare, t0, tuple(raws)))


def _ts(entry: Entry | Declared) -> datetime:
    return entry.ts if isinstance(entry, Declared) else entry.ping.ts


def decode(data: bytes) -> DeviceState:
    """Raises ``msgspec.DecodeError`` (a ``ValueError``) on bytes that are not a valid state."""
    head = data[:4]
    if head == _ZSTD:
        try:
            raw = _decompress(data)
        except zstandard.ZstdError as exc:
            raise msgspec.DecodeError(f"not a stored state: {exc!r}") from exc
    elif head[:1] == _ZLIB:
        try:
            inflate = zlib.decompressobj()
            raw = inflate.decompress(data, _MAX_ROW)
        except zlib.error as exc:
            raise msgspec.DecodeError(f"not a stored state: {exc}") from exc
        if inflate.unconsumed_tail:
            raise msgspec.DecodeError(f"a stored state inflating to more than {_MAX_ROW} B")
    else:
        return _LEGACY.decode(data).state
    stored = _DECODER.decode(raw)
    state = stored.state
    if not stored.log:
        return state
    if stored.t0 is None:
        raise msgspec.DecodeError("a stored reorder log without its start time")
    dev = state.device_id
    ts = stored.t0
    pings: list[Ping] = []
    for item in stored.log:
        ts = ts + item.dt * _US
        pings.append(Ping(dev, ts, item.lon, item.lat, item.speed, item.heading, item.accuracy, item.events))
    entries: list[Entry | Declared] = []
    after = state
    for item, ping in zip(reversed(stored.log), reversed(pings), strict=True):
        try:
            before = _apply(after, item.before)
        except (msgspec.ValidationError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise msgspec.DecodeError(f"a stored reorder log that does not fit its state: {exc}") from exc
        after = before
        if item.pair is not None:
            entries.append(Declared(ping.ts, item.pair.truck, before, ping.ts - item.pair.back * _US))
            continue
        alerts = tuple(_unalert(a, dev, ping.ts) for a in item.alerts)
        updates = tuple(
            AlertUpdate(_unalert(u.alert, dev, ping.ts), ping.ts + u.dt * _US, {}, u.closes) for u in item.updates
        )
        entries.append(Entry(ping, before, alerts, updates))
    entries.reverse()
    state.log = tuple(entries)
    return state
