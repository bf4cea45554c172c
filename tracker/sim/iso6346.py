"""ISO 6346 container numbers for simulated containers.

Container trackers are keyed by the container number, and the customs feed validates the check digit,
so a simulated number with a wrong digit would be dead-lettered instead of exercising the detectors.
"""

from __future__ import annotations

import random

from tracker.core.iso6346 import check_digit

__all__ = ["OWNER_CODES", "check_digit", "container_number"]

OWNER_CODES = ("MSCU", "MAEU", "CMAU", "HLXU", "TCLU", "TGHU", "ONEU", "EVRU")
"""Real owner prefixes of large carriers and lessors, category U (freight container)."""


def container_number(rng: random.Random, used: set[str]) -> str:
    """A fresh, valid number not yet in ``used`` (which it updates)."""
    while True:
        first10 = rng.choice(OWNER_CODES) + f"{rng.randrange(1_000_000):06d}"
        number = first10 + str(check_digit(first10))
        if number not in used:
            used.add(number)
            return number
