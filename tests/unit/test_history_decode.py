"""The history's binary COPY decoding: exactly PostgreSQL's layout (header, rows, trailer), NaN for NULL
speed/heading kept, and anything else refused rather than misread."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime

import numpy as np
import pytest

from tracker.adapters.store_exports import COPY_SIGNATURE, PG_EPOCH_US, Track, decode_copy

T = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def copy_bytes(rows: list[tuple[datetime, float, float, float, float]], extension: bytes = b"") -> bytes:
    """What ``COPY (SELECT ts, lon, lat, speed, heading …) TO STDOUT (FORMAT binary)`` sends."""
    out = COPY_SIGNATURE + struct.pack(">ii", 0, len(extension)) + extension
    for ts, lon, lat, speed, heading in rows:
        us = int(ts.timestamp() * 1_000_000) - PG_EPOCH_US
        out += struct.pack(">hiqidid", 5, 8, us, 8, lon, 8, lat)
        out += struct.pack(">ifif", 4, speed, 4, heading)
    return out + b"\xff\xff"


def test_rows_decode_to_columns() -> None:
    rows = [(T, -46.3, -23.95, 3.5, 90.0), (T.replace(second=10), -46.31, -23.96, math.nan, math.nan)]
    track = decode_copy(copy_bytes(rows, extension=b"\x00\x01"))
    assert len(track) == 2
    assert track.ts_us.tolist() == [int(r[0].timestamp() * 1_000_000) for r in rows]
    assert track.lon.tolist() == [-46.3, -46.31] and track.lat.tolist() == [-23.95, -23.96]
    assert track.speed[0] == np.float32(3.5) and math.isnan(track.speed[1]) and math.isnan(track.heading[1])
    assert track.lon.dtype == np.float64 and track.ts_us.dtype == np.int64


def test_empty_and_concatenated() -> None:
    assert len(Track.empty()) == 0 and len(decode_copy(copy_bytes([]))) == 0
    one = decode_copy(copy_bytes([(T, 1.0, 2.0, 3.0, 4.0)]))
    both = Track.concat([one, Track.empty(), one])
    assert len(both) == 2 and both.lat.tolist() == [2.0, 2.0]


@pytest.mark.parametrize(
    "data",
    [
        b"not a copy stream at all",
        copy_bytes([(T, 1.0, 2.0, 3.0, 4.0)])[:-2],  # no trailer
        copy_bytes([(T, 1.0, 2.0, 3.0, 4.0)])[:-3] + b"\xff\xff",  # a row cut short
        copy_bytes([(T, 1.0, 2.0, 3.0, 4.0)]).replace(b"\x00\x05", b"\x00\x04", 1),  # another field count
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_copy(data)
