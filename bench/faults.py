"""Fault scenarios at full size, with figures: writes bench/results/faults.json.

Runs the scenarios of tests/faults/scenarios.py (the same code the CI tests run at a small size)
against a broker and a database of their own (``deploy/stack.sh infra`` in a temporary
directory, loopback only) and the service as a separate ``tracker run`` process:

* kill -9 of the service mid-stream (50,000 pings), broker restart mid-stream, PostgreSQL stopped
  for 30 s mid-stream, the database read-only and INSERT revoked for 30 s;
* twice the sustainable rate (measured first, in the same run) for 60 s;
* 10,000 poison messages of 20 kinds among 100,000 good ones; retained poison and reconnects.

Every scenario's checks are recorded as they came out, passed or failed; the exit code is 1 when
any failed. Each scenario has a time limit (``--timeout``): one cut short is cancelled, its service stopped, and
recorded as failed, so it cannot leave a service subscribed on the broker for the next ones. ``--size ci`` runs the
CI sizes; ``--only NAME`` some scenarios; ``--markdown FILE``
prints a result file's figures as the README quotes them, without running anything. ``FAULTS_OVERLOAD_RATE``
(pings/s) fixes the overload scenario's load instead of twice the rate measured in the run, for an A/B of two
versions on a machine whose load varies.

Run: ``.venv/bin/python bench/faults.py`` (about 15 minutes on the project's 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from the repository root: tests/ is importable
    sys.path.insert(0, str(ROOT))

from tests.faults import scenarios  # noqa: E402
from tests.faults.harness import FaultStack  # noqa: E402
from tests.faults.scenarios import CI, FULL, Outcome  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "faults.json"


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


SCENARIO_TIMEOUT_S = {"full": 1200.0, "ci": 240.0}
"""A scenario's time limit (as tests/faults/test_faults.py): cut short, it is cancelled and its service stopped."""


async def run(names: Sequence[str], size: str, workdir: Path, timeout_s: float | None = None) -> dict[str, Any]:
    sizes = FULL if size == "full" else CI
    results: dict[str, Any] = {}
    began = datetime.now(UTC)
    with FaultStack.started() as stack:
        for name in names:
            print(f"== {name}", flush=True)
            t0 = time.monotonic()
            try:
                limit = timeout_s or SCENARIO_TIMEOUT_S[size]
                outcome = await scenarios.run_scenario(name, stack, sizes, workdir, limit)
                entry = outcome.to_json()
            except Exception as exc:  # a scenario that breaks is a result too: recorded, the others still run
                outcome = Outcome(name)
                outcome.check("the scenario ran to its end", False, f"{type(exc).__name__}: {exc}")
                entry = outcome.to_json()
                entry["traceback"] = traceback.format_exc()[-4000:]
            entry["seconds"] = round(time.monotonic() - t0, 1)
            results[name] = entry
            print(outcome.report().split("\n  figures:")[0], flush=True)
    return {
        "benchmark": "faults",
        "size": size,
        "sizes": {k: v for k, v in vars(sizes).items()},
        "git_commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "started_at": began.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "passed": all(r["passed"] for r in results.values()),
        "scenarios": results,
    }


def _fig(res: Mapping[str, Any], name: str, key: str, default: object = "–") -> Any:
    value = res["scenarios"].get(name, {}).get("figures", {}).get(key)
    return default if value is None else value


def _n(value: object) -> str:
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(res: Mapping[str, Any]) -> str:
    """The figures of a result file as the Markdown the README quotes, so no figure is copied by hand."""
    sc = res["scenarios"]
    lines = [
        f"{res['size']} size, commit {str(res.get('git_commit') or '?')[:7]}, {res['finished_at'][:10]}; "
        f"{sum(1 for s in sc.values() if s['passed'])} of {len(sc)} scenarios passed every check",
        "",
        "| fault | sent | stored | duplicated rows | dead letters of valid pings | alerts expected / raised"
        " | recovery s | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    labels = {
        "kill9": "kill -9 of the service mid-stream",
        "broker_restart": "broker restarted mid-stream",
        "stack_rerun": "`deploy/stack.sh infra` re-run mid-stream",
        "postgres_stopped": "PostgreSQL stopped mid-stream",
        "database_read_only": "database read-only",
        "database_insert_denied": "INSERT on pings revoked",
        "overload": "2× the sustainable rate",
        "poison": "poison among good pings",
    }
    for name, label in labels.items():
        if name not in sc:
            continue
        f = sc[name]["figures"]
        if name == "postgres_stopped":
            label += f" ({_fig(res, name, 'outage_s')} s)"
        if name in ("database_read_only", "database_insert_denied"):
            label += f" ({_fig(res, name, 'fault_s')} s)"
        if name == "overload":
            label += f" ({_fig(res, name, 'overload_s')} s)"
        dead = f.get("dead_letters_of_valid_pings")
        dead_n = sum(dead.values()) if isinstance(dead, dict) else "–"
        alerts = f"{_n(f['alerts_expected'])} / {_n(f['alerts_raised'])}" if "alerts_expected" in f else "–"
        sent = f.get("pings_sent", f.get("good_pings_sent"))
        stored = f.get("pings_stored")
        dup = f.get("pings_unexpected_rows", 0 if stored is not None else "–")
        failed = [c["name"] for c in sc[name]["checks"] if not c["passed"]]
        result = "passed" if not failed else "FAILED: " + "; ".join(failed)
        recovery = f.get("recovery_s")
        if "every ping stored once" in failed or "every ping stored" in failed:
            recovery = None  # back in step with the devices means nothing when pings were lost
        lines.append(
            f"| {label} | {_n(sent)} | {_n(stored)} | {_n(dup)} | {_n(dead_n)} | {alerts} | {_n(recovery)} | {result} |"
        )
    k9, ov, po, pg, rp = (sc.get(n, {}).get("figures", {}) for n in
                          ("kill9", "overload", "poison", "postgres_stopped", "retained_poison"))  # fmt: skip
    lines.append("")
    if k9:
        kills = k9.get("kills") or []
        lines.append(
            f"* kill -9: {len(kills)} kill(s), with "
            + ", ".join(f"{_n(k['pings_stored_at_kill'])}" for k in kills)
            + " pings stored; each restart 1 s later, database and broker checks passing after "
            + ", ".join(f"{k['restart_to_up_s']}" for k in kills)
            + f" s; {_n(k9.get('duplicates_received_and_stored_once'))} redelivered duplicates stored once; "
            f"{k9.get('intruders_inside_at_a_kill')} trucks stood inside a restricted fence at a kill and raised "
            f"{k9.get('restricted_entries_raised_again_after_restart')} new entries after it."
        )
    if pg:
        api = pg.get("api_during_outage", {})
        lines.append(
            "* PostgreSQL down: "
            + ", ".join(f"{route} {v.get('status')} in {v.get('seconds')} s" for route, v in api.items())
            + "."
        )
    if ov:
        lines.append(
            f"* Overload: sustainable {_n(ov.get('sustainable_pings_per_s'))} pings/s (measured under a saturating "
            f"load), {_n(ov.get('achieved_publish_pings_per_s'))}/s published for {ov.get('overload_s')} s by "
            f"{_n(ov.get('devices'))} devices; peak backlog {_n(ov.get('peak_backlog'))} (peak "
            f"{_n(ov.get('peak_queue_depth'))} of them in the service's queue, the rest in the broker), peak lag "
            f"{ov.get('peak_ingest_wait_s')} s (tracker_ingest_wait_seconds), /readyz 503 at "
            f"{ov.get('readyz_503_samples')} of {ov.get('samples_taken')} one-second samples; service RSS "
            f"{ov.get('rss_mib_fresh')} MiB fresh, {ov.get('rss_mib_peak')} MiB peak; broker RSS peak "
            f"{ov.get('broker_rss_mib_peak')} MiB; drained {ov.get('recovery_s')} s after the load stopped."
        )
    if po:
        kinds = po.get("per_kind", {})
        handled = sum(1 for v in kinds.values() if v.get("dead_letters") == v.get("sent"))
        lines.append(
            f"* Poison: {_n(po.get('inputs_fuzzed'))} bad messages of {po.get('poison_kinds')} kinds among "
            f"{_n(po.get('good_pings_sent'))} good ones; {_n(po.get('poison_dead_lettered'))} dead letters and "
            f"{_n(po.get('poison_ignored'))} ignored; {handled} kinds dead-lettered in full."
        )
    for name, entry in sc.items():
        if name not in labels and not entry["passed"]:
            why = "; ".join(f"{c['name']} ({c['detail']})" for c in entry["checks"] if not c["passed"])
            lines.append(f"* {name}: FAILED: {why}")
    if rp:
        lines.append(
            f"* Retained poison: {rp.get('retained_messages')} retained messages gave dead letters "
            + ", ".join(f"{k}: {v}" for k, v in (rp.get("dead_letters") or {}).items())
            + "."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("full", "ci"), default="full")
    p.add_argument("--only", action="append", choices=list(scenarios.SCENARIOS), help="run this scenario (repeatable)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--timeout", type=float, default=None, help="a scenario's time limit, s (1200 full, 240 ci)")
    p.add_argument("--keep-logs", action="store_true", help="keep the service logs (their folder is printed)")
    p.add_argument("--markdown", type=Path, default=None, help="print a result file's figures as Markdown, no run")
    args = p.parse_args(argv)
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text(encoding="utf-8"))))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="port-tracker-faults-logs-"))
    try:
        res = asyncio.run(run(args.only or list(scenarios.SCENARIOS), args.size, workdir, args.timeout))
    finally:
        if args.keep_logs:
            print(f"service logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(markdown(res))
    print(f"wrote {args.out}")
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
