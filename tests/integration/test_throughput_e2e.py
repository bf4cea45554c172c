"""``bench/throughput.py e2e`` on a tiny load: its own stack, the service as a process, every phase reported.

No figure is checked (timings mean nothing on a shared CI machine); what is checked is that every phase
ran to its end: the broker-only subscriber got every message, the service stored every row, the backlog
queued while it was down was drained, and every intruder's restricted entry was announced on alerts/#.
"""

from __future__ import annotations

import asyncio

from bench.e2e import run
from bench.throughput import parser


def test_e2e_runner_on_a_tiny_load() -> None:
    argv = ["e2e", "--devices", "20", "--steps", "10", "--backlog-steps", "10", "--connections", "2"]
    argv += ["--background-rate", "200", "--background-s", "3", "--alerts", "4", "--timeout", "60"]
    args = parser().parse_args(argv)
    res = asyncio.run(run(args))
    assert res["broker_only"]["received"] == res["broker_only"]["messages"] == 200
    assert res["service"]["pings"] == 200 and res["service"]["pings_per_s"] > 0
    assert res["backlog_drain"]["backlog_pings"] == 200
    assert res["backlog_drain"]["pings_stored_before_restart"] == 0
    lat = res["alert_latency"]
    assert lat["alerts_received"] == lat["intruders"] == 4
    assert 0 < lat["median_ms"] <= lat["p99_ms"]
    assert res["p99_alert_latency_ms"] == lat["p99_ms"]
    assert isinstance(res["generator_not_the_limit"], bool)
