"""Reading the detectors' thresholds (``TRACKER_DETECTORS_FILE``) for the service, at start.

The file's ``[detectors]`` table is parsed by the pure ``tracker.core.params``; anything it refuses
stops the start with the file and the key named, rather than running with a threshold left at its
default by a typo.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from tracker.core.params import DetectorParams, parse


def load_detector_params(path: str) -> DetectorParams:
    """The thresholds in ``path`` (its ``[detectors]`` table); the core's defaults when ``path`` is empty."""
    if not path:
        return DetectorParams()
    try:
        with Path(path).open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read detector thresholds from {path}: {exc}") from None
    unknown = set(data) - {"detectors"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level table(s) {sorted(unknown)}; thresholds go under [detectors]")
    try:
        return parse(data.get("detectors", {}))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
