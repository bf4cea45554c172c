"""The soak's verdict (bench/soak.py): the target is never eased by the reasons it gives for missing it."""

from __future__ import annotations

import argparse

from bench.soak import judge, warmup_s


def test_verdicts() -> None:
    assert judge(True, 30, 100.0, True, 0.0, 256.0)[0] == "pass"
    assert judge(True, 30, 256.0, True, 0.0, 256.0)[0] == "pass"
    # over the target: states still filling if their own growth accounts for the excess, else a leak
    assert judge(True, 30, 300.0, True, 60.0, 256.0)[0] == "filling"
    assert judge(True, 30, 300.0, True, 10.0, 256.0)[0] == "leak"
    assert judge(True, 30, 2000.0, True, 0.0, 256.0)[0] == "leak"
    assert judge(True, 30, 2000.0, True, None, 256.0)[0] == "fail"  # a smoke run: no warm-up to compare with
    assert judge(True, 30, 100.0, True, None, 256.0)[0] == "pass"
    # no verdict on memory without a steady state, whatever the slope
    assert judge(True, 30, 10.0, False, 0.0, 256.0)[0] == "behind"
    assert judge(False, 30, 10.0, True, 0.0, 256.0)[0] == "died"
    assert judge(True, 2, 10.0, True, 0.0, 256.0)[0] == "too short"


def test_warmup_is_the_later_of_fixes_and_minutes() -> None:
    args = argparse.Namespace(warmup_fixes=40, devices=2000, rate=500.0, warmup_minutes=10.0)
    assert warmup_s(args) == 600.0  # 40 fixes take 160 s at 500 pings/s: the clock decides
    args.rate = 100.0
    assert warmup_s(args) == 800.0  # 40 fixes every 20 s outlast 10 minutes
