"""The raw-socket MQTT helpers the load generators share (tracker/sim/rawmqtt.py, tracker/sim/spots.py)."""

from __future__ import annotations

import socket
import threading

from shapely.geometry import Point

from geofences import FenceKind, haversine_m, load_port
from tracker.sim.rawmqtt import Packet, count_pubacks, packets, read_packets, string, varint
from tracker.sim.spots import restricted_spots


def publish_frame(topic: str, pid: int, payload: bytes) -> bytes:
    var = string(topic) + pid.to_bytes(2, "big") + payload
    return b"\x32" + varint(len(var)) + var


def test_varint_follows_the_spec_examples() -> None:
    assert [varint(n) for n in (0, 127, 128, 16_383, 16_384, 2_097_151)] == [
        b"\x00",
        b"\x7f",
        b"\x80\x01",
        b"\xff\x7f",
        b"\x80\x80\x01",
        b"\xff\xff\x7f",
    ]


def test_packets_keeps_a_cut_packet_for_the_next_read() -> None:
    big = publish_frame("t/a", 1, b"x" * 300)  # a two-byte remaining length
    buf = big + b"\x40\x02\x00\x01" + big[:5]
    found, rest = packets(buf)
    assert [first for first, _, _ in found] == [0x32, 0x40]
    assert found[0][2] == len(big) and rest == len(big) + 4
    assert packets(b"\x32")[0] == [] and packets(b"\x32\x80")[1] == 0  # length not complete yet


def test_the_reader_loop_reassembles_packets_sent_byte_by_byte() -> None:
    frames = [publish_frame(f"t/{i}", i + 1, b"p" * (i * 70)) for i in range(6)] + [b"\x40\x02\x00\x07"] * 3
    stream = b"".join(frames)
    left, right = socket.socketpair()
    seen: list[tuple[int, bytes]] = []
    acks = 0

    def handle(buf: bytes, found: list[Packet]) -> None:
        nonlocal acks
        acks += count_pubacks(found)
        seen.extend((first, buf[var:end]) for first, var, end in found)

    reader = threading.Thread(target=read_packets, args=(right, handle, 7))
    reader.start()
    for i in range(len(stream)):
        left.sendall(stream[i : i + 1])
    left.close()
    reader.join(10)
    right.close()
    assert not reader.is_alive()
    assert acks == 3
    assert [first for first, _ in seen] == [0x32] * 6 + [0x40] * 3
    assert [body for _, body in seen[:6]] == [f[2 if len(f) < 130 else 3 :] for f in frames[:6]]


def test_restricted_spots_stand_inside_their_fence_and_apart() -> None:
    fences = load_port("santos").fences
    by_id = {f.id: f for f in fences}
    spots = restricted_spots(fences)
    restricted = {f.id for f in fences if f.kind is FenceKind.RESTRICTED}
    assert len(spots) > 10
    assert {fid for fid, _ in spots[: len(restricted)]} <= restricted
    for fid, (lon, lat) in spots:
        assert by_id[fid].kind is FenceKind.RESTRICTED
        assert by_id[fid].geometry.contains(Point(lon, lat))
    for fid in restricted:  # a grid 40 m apart: no two devices of one fence near enough to meet (30 m)
        points = [p for f, p in spots if f == fid]
        gaps = [haversine_m(*a, *b) for i, a in enumerate(points) for b in points[i + 1 :]]
        assert min(gaps, default=40.0) > 39.0, fid
