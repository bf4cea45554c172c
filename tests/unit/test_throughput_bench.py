"""bench/throughput.py on a small world: every method agrees with ours, the result file keeps other keys.

No figure is checked (a unit test cannot time anything meaningfully on a shared CI machine); what is
checked is that the runner works and that the answers it compares really are equal, so a regression in
FenceIndex against STRtree, the naive loop or geopandas fails here too. PostGIS is left to the real run.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.throughput import main


def test_geofence_runner_on_a_small_world(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    out.write_text(json.dumps({"core": {"kept": True}}))
    argv = ["geofence", "--fences", "500", "--points", "3000", "--repeats", "1", "--per-point", "500"]
    argv += ["--naive-points", "50", "--no-postgis", "--out", str(out), "--no-plot"]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["core"] == {"kept": True}
    res = data["geofence"]
    assert res["world"]["fences"] == 500
    assert res["world"]["synthetic_fences"] == 500 - 314
    methods = res["methods"]
    for name in ("strtree_predicate", "strtree_bbox_intersects_xy", "naive_loop", "geopandas_sjoin"):
        assert methods[name]["agrees_with_ours"] is True, name
    assert methods["ours_per_point"]["agrees_with_batch"] is True
    assert methods["ours_batch_raw"]["pairs"] > 1000
    assert res["world"]["points_where_hysteresis_changes_the_answer"] > 0
    assert methods["postgis"] == {"skipped": "--no-postgis"}
    assert res["geofence_ratio_vs_postgis"] is None
    assert res["geofence_ratio_vs_naive"] is not None
