"""bench/feeds.py runs and each viewer receives exactly the fixes its scope admits (no figure is checked)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.feeds import main


def test_feeds_runner_on_a_small_batch(tmp_path: Path) -> None:
    out = tmp_path / "feeds.json"
    assert main(["--batch", "40", "--rounds", "3", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["fan_out_by_viewers"]) == {"0", "1", "10", "100"}
    for viewers, row in data["fan_out_by_viewers"].items():
        assert row["fixes_per_viewer_per_batch"] == (0 if viewers == "0" else 20)  # half of 20 devices x 2 fixes
    assert data["positions_message_bytes"] > 40 * 100
