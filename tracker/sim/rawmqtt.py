"""MQTT 3.1.1 on a plain socket: the framing and the reader loop of the load generators.

The end-to-end benchmark (bench/e2e.py) and the fault scenarios (tests/faults/harness.py) both publish
ready-made QoS 1 frames over raw sockets, because paho spends tens of microseconds of Python per
message, taken on a 2-core machine from the service under test. They share this module, above all the
one loop that cuts a byte stream into packets: a packet split across two reads, or a length spread over
several bytes, is what such a loop gets wrong, and one copy is tested once (tests/unit/test_rawmqtt.py).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

Packet = tuple[int, int, int]
"""(first byte, start of the variable header, end) of one whole packet in a buffer."""


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (the remaining length)."""
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(text: str | bytes) -> bytes:
    """A length-prefixed UTF-8 string (topics, client ids, user names, passwords)."""
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def packets(buf: bytes) -> tuple[list[Packet], int]:
    """Every whole packet in ``buf``, and where the incomplete rest starts."""
    out: list[Packet] = []
    pos = 0
    n = len(buf)
    while n - pos >= 2:
        length, mult, k = 0, 1, pos + 1
        while k < n:
            length += (buf[k] & 0x7F) * mult
            mult *= 128
            if not buf[k] & 0x80:
                break
            k += 1
        else:
            break
        end = k + 1 + length
        if end > n:
            break
        out.append((buf[pos], k + 1, end))
        pos = end
    return out, pos


def read_packets(sock: socket.socket, handle: Callable[[bytes, list[Packet]], None], bufsize: int = 65536) -> None:
    """Read ``sock`` until it closes or fails, handing each batch of whole packets to ``handle``.

    ``handle`` gets the buffer the packets' offsets point into; the rest of a packet cut by a read is
    kept for the next one. Meant for a reader thread: it returns only when the connection is gone.
    """
    buf = b""
    while True:
        try:
            chunk = sock.recv(bufsize)
        except OSError:
            return
        if not chunk:
            return
        buf += chunk
        found, rest = packets(buf)
        if found:
            handle(buf, found)
        buf = buf[rest:]


def count_pubacks(found: list[Packet]) -> int:
    """How many of ``found`` are PUBACKs (what a QoS 1 publisher counts)."""
    return sum(1 for first, _, _ in found if first == 0x40)
