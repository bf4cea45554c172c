"""Detection quality of the whole pipeline against the simulator's ground truth.

Unit tests prove each detector on hand-made fixes; they cannot say whether, on a day of noisy
port traffic, the alerts an officer receives are the injected anomalies and nothing else. This
runner replays a labelled Santos scenario through :class:`tracker.core.engine.Engine` exactly as
the service would see it (delivery order, duplicates, late fixes, customs decisions, timer
ticks) and scores the security alerts against the truth:

* recall per injected kind, and time-to-alert (from the truth's ``start`` to the moment the
  engine emitted the first matching alert, on the replay clock, i.e. when an operator would
  have seen it). Kinds whose detectors wait for a duration also get the time-to-alert measured
  from ``start + threshold``: the target "median ≤ threshold + one reporting interval" is about
  that figure, since no detector may fire before its threshold;
* precision per alert kind (``post_inspection_access`` split by its evidence reason): the share
  of its alerts that match some truth item;
* false alerts (matching no truth) per 1,000 trips and per 1,000 clean trips.

Run: ``python bench/detection.py --trucks 500 --hours 24 --anomaly-share 0.05 --seed 1
--out bench/results/detection.json``. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from geofences import FenceIndex, load_port
from tracker.config import Settings
from tracker.core.engine import Emitted, Engine
from tracker.core.inspection import AccessWindowParams
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Inspection, Ping, Severity
from tracker.core.pipeline import Pipeline
from tracker.core.rendezvous import Params as RendezvousParams
from tracker.sim.anomalies import AnomalyKind, GroundTruth
from tracker.sim.scenario import Scenario, SimConfig, StagingStyle, generate

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "detection.json"
DEFAULT_PLOT = ROOT / "results" / "detection_tta.png"

SECURITY = frozenset({Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL})
"""An alert an operator must look at. ``info`` timeline entries (fence transitions, access windows
opening and closing) and ``low`` ones are logged, not worked, so they are neither hits nor false alerts."""

EARLY_S = 30.0
"""An alert may precede the truth's ``start`` by this much: truth instants are planned positions, the
fix that reveals them carries GPS noise and the motion detector may call a stop a fix early."""
GRACE_S = 600.0
"""An alert may follow the truth's ``end`` by this much: a silence is only known when it is over, a
stop is closed by the next fix, and a slow tracker reports the end of anything up to five minutes late."""
RUN_ON_S = 0.0
"""How long the replay clock runs past the last delivered ping: not at all. The scenario ends there, but the
devices in it do not: a yard box or a truck still in the port would keep reporting, so a timer that falls due
after the last delivery (every device still inside "going dark" when the feed stops) measures the end of the
recording, not a detector. Timers due up to the last delivery still fire."""

SEPARATION_REPICK_S = 300.0
"""Declarations of one pair this close in time are one declaration: after a separation the truck is back
beside the box (truth ``end``) and lifts it again a minute or two later, a pause no dispatcher clears a pair for."""

PIA = "post_inspection_access"

DETECTS: Mapping[AnomalyKind, frozenset[str]] = {
    AnomalyKind.POST_CLEARANCE_DETOUR: frozenset({f"{PIA}:off_route", f"{PIA}:zone", f"{PIA}:stop", "unexpected_stop"}),
    AnomalyKind.UNEXPECTED_STOP: frozenset({"unexpected_stop", f"{PIA}:stop"}),
    AnomalyKind.RENDEZVOUS: frozenset({"rendezvous", f"{PIA}:alongside"}),
    AnomalyKind.CONTAINER_SEPARATED: frozenset({"container_separated", f"{PIA}:alongside"}),
    AnomalyKind.GOING_DARK: frozenset({"signal_lost", f"{PIA}:dark"}),
    AnomalyKind.GPS_SPOOFING: frozenset({"gps_integrity"}),
    AnomalyKind.DOOR_OPEN_AFTER_CLEARANCE: frozenset({f"{PIA}:sensor"}),
}
"""Which alerts detect each injected kind: only these count for its recall and time-to-alert."""

ALSO: Mapping[AnomalyKind, frozenset[str]] = {
    AnomalyKind.POST_CLEARANCE_DETOUR: frozenset(
        {"geofence_enter", "geofence_exit", "geofence_cross", f"{PIA}:dark", "signal_lost", "signal_restored"}
    ),
    AnomalyKind.UNEXPECTED_STOP: frozenset(),
    AnomalyKind.RENDEZVOUS: frozenset({"unexpected_stop", f"{PIA}:stop"}),
    AnomalyKind.CONTAINER_SEPARATED: frozenset({"unexpected_stop", f"{PIA}:stop", "container_moving_unpaired"}),
    AnomalyKind.GOING_DARK: frozenset({"signal_restored"}),
    # spoofed fixes are kept away from the detectors: to them the tracker said nothing usable meanwhile; once the
    # integrity check re-anchors on a run of consistent spoofed fixes, what the detectors make of them is the spoof's
    AnomalyKind.GPS_SPOOFING: frozenset(
        {
            "container_separated",
            "signal_lost",
            "signal_restored",
            "unexpected_stop",
            f"{PIA}:dark",
            f"{PIA}:stop",
            f"{PIA}:off_route",
            f"{PIA}:zone",
        }
    ),
    AnomalyKind.DOOR_OPEN_AFTER_CLEARANCE: frozenset(),
}
"""Alerts that are true consequences of an injected kind without being its detector (the truck in a
rendezvous also stands still on the shoulder; a detour through a restricted zone enters it). They are
not false alerts, so they count for precision, never for recall."""

POST_INSPECTION_KINDS: tuple[AnomalyKind, ...] = tuple(AnomalyKind)
"""Every injected kind happens on an export trip between clearance and loading (see the simulator)."""


# ------------------------------------------------------------------------------------------ replay


def signature(alert: Alert) -> str:
    """The alert kind, with ``post_inspection_access`` split by reason: each reason is its own rule."""
    if alert.kind == PIA:
        return f"{PIA}:{alert.evidence.get('reason', '?')}"
    return alert.kind


def items_in_delivery_order(scenario: Scenario) -> list[Ping | Inspection]:
    """Pings by delivery time and customs decisions by their own time, merged as the service sees them."""

    def when(item: Ping | Inspection) -> datetime:
        if isinstance(item, Inspection):
            return item.ts
        return item.received or item.ts

    merged: list[Ping | Inspection] = [*scenario.pings, *scenario.inspections]
    merged.sort(key=when)
    return merged


def declared_pairs(scenario: Scenario, *, at_start: bool = False) -> list[tuple[datetime, str, str | None]]:
    """(time, container, truck or None) pairing declarations, in time order.

    A dispatch system declares the pair per haul: when the truck picks the box up (outside the
    port for an export, the yard pick-up for an import) and clears it when the box is
    legitimately handed over (dropped in a terminal yard, set down on the quay, or driven out of
    the port), so a box resting in a yard while its truck does other work is not "separated".
    A drop that the ground truth marks as ``container_separated`` (the truck drives off without
    the box) is no hand-over: the dispatcher never released the pair, so the declaration runs on
    through the separation, at least until the truck is back beside the box (the truth's
    ``end``), and into the haul that picks it up again. ``at_start`` declares every pair at the
    scenario start and never clears it (the naive reading of ``scenario.pairs``).
    """
    if at_start:
        return [(scenario.start, c, t) for c, t in sorted(scenario.pairs.items())]
    spans: dict[tuple[str, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    for h in scenario.hauls:
        spans[(h.container, h.truck)].append((h.start, h.end))
    for g in scenario.truth:
        if g.kind is AnomalyKind.CONTAINER_SEPARATED and g.other is not None:
            spans[(g.device_id, g.other)].append((g.start, g.end))
    out: list[tuple[datetime, str, str | None]] = []
    for (c, truck), intervals in spans.items():
        merged: list[tuple[datetime, datetime]] = []
        for start, end in sorted(intervals):
            if merged and start <= merged[-1][1] + timedelta(seconds=SEPARATION_REPICK_S):
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        for start, end in merged:
            out.append((start, c, truck))
            out.append((end, c, None))
    out.sort(key=lambda e: (e[0], e[1], e[2] is None))
    return out


def replay(
    scenario: Scenario, *, tick_every_s: float = 5.0, pair_at_start: bool = False, pipeline: Pipeline | None = None
) -> Engine:
    """Run the scenario through a fresh engine with the default detectors for its port (or ``pipeline``)."""
    containers = {d: [d] for d, k in scenario.devices.items() if k is DeviceKind.CONTAINER}
    if pipeline is None:
        pipeline = Pipeline(FenceIndex(load_port(scenario.port).fences, entry_margin_m=Settings().entry_margin_m))
    engine = Engine(
        pipeline,
        kinds=scenario.devices,
        containers=containers,
        tick_every_s=tick_every_s,
    )
    pairs = declared_pairs(scenario, at_start=pair_at_start)
    k = 0
    for item in items_in_delivery_order(scenario):
        when = item.ts if isinstance(item, Inspection) else item.received or item.ts
        while k < len(pairs) and pairs[k][0] <= when:
            at, container, truck = pairs[k]
            engine.pair(container, truck, at)
            k += 1
        engine.run([item])
    last = max((p.received or p.ts for p in scenario.pings), default=scenario.start)
    engine.run([], until=last + timedelta(seconds=RUN_ON_S))  # the clock stops with the feed (RUN_ON_S)
    return engine


@dataclass(frozen=True, slots=True)
class Raised:
    """A security alert still standing at the end of the replay, and when the engine emitted it."""

    alert: Alert
    at: datetime

    @property
    def sig(self) -> str:
        return signature(self.alert)


def standing_alerts(emitted: Iterable[Emitted]) -> list[Raised]:
    """Security alerts raised and not retracted, once each, in emission order.

    A fix arriving late inside the reorder window can retract an alert the in-order replay
    no longer raises; the operator is left without it, so it is scored as never raised.
    """
    raised: dict[str, Raised] = {}
    for em in emitted:
        ev = em.event
        if isinstance(ev, AlertUpdate):
            if ev.fields.get("retracted"):
                raised.pop(str(ev.alert.id), None)
            continue
        if ev.severity in SECURITY and str(ev.id) not in raised:
            raised[str(ev.id)] = Raised(ev, em.at)
    return sorted(raised.values(), key=lambda r: (r.at, r.alert.device_id, r.alert.kind))


# ---------------------------------------------------------------------------------------- matching


@dataclass
class TruthItem:
    truth: GroundTruth
    devices: frozenset[str]
    interval_s: float  # reporting interval of the truth's own device
    hits: list[Raised] = field(default_factory=list)

    def window(self) -> tuple[datetime, datetime]:
        return (
            self.truth.start - timedelta(seconds=EARLY_S),
            self.truth.end + timedelta(seconds=GRACE_S),
        )


def reporting_intervals(scenario: Scenario) -> dict[str, float]:
    """Each device's median interval between consecutive fixes: the "one reporting interval" of the targets."""
    by_dev: dict[str, list[float]] = defaultdict(list)
    for p in scenario.pings:
        by_dev[p.device_id].append(p.ts.timestamp())
    out: dict[str, float] = {}
    for dev, ts in by_dev.items():
        uniq = sorted(set(ts))
        gaps = [b - a for a, b in itertools.pairwise(uniq)]
        out[dev] = round(statistics.median(gaps), 1) if gaps else 0.0
    return out


def threshold_s(raised: Raised) -> float:
    """How long the rule that raised this alert waits by design before it may fire.

    Taken from the alert's own evidence where the detector records it (a stop's limit depends on
    the zone, a silence's on the device's rhythm), else from the detector's parameters; rules that
    fire on a single fix (a sensor event, a teleport, a zone entry, a separation distance) have 0.
    """
    ev = raised.alert.evidence
    for key in ("threshold_s", "limit_s", "min_duration_s"):
        value = ev.get(key)
        if isinstance(value, int | float):
            return float(value)
    sig = raised.sig
    if sig == "rendezvous":
        return RendezvousParams().min_duration_s
    if sig == f"{PIA}:alongside":
        return AccessWindowParams().alongside_s
    return 0.0


def devices_of(truth: GroundTruth, trips: Mapping[int, tuple[str, str]]) -> frozenset[str]:
    """Devices whose alerts may reveal a truth item: its device, the other one, and its trip's truck and box."""
    devs = {truth.device_id}
    if truth.other:
        devs.add(truth.other)
    if truth.trip is not None and truth.trip in trips:
        devs.update(trips[truth.trip])
    return frozenset(devs)


@dataclass
class Scored:
    items: list[TruthItem]
    alerts: list[Raised]
    matched: dict[int, list[int]]  # alert index -> truth item indexes it matches (any rule)
    false: list[Raised]
    false_on_clean: list[Raised]
    false_unassigned: list[Raised]  # on no trip at all (a box left in a yard, a truck between trips)
    intervals: dict[str, float]


def score(scenario: Scenario, alerts: Sequence[Raised]) -> Scored:
    """Match standing alerts to truth items: same device (or the related ones) and ts inside the item's window."""
    trips = {t.trip: (t.truck, t.container) for t in scenario.trip_log}
    intervals = reporting_intervals(scenario)
    items = [TruthItem(t, devices_of(t, trips), intervals.get(t.device_id, 0.0)) for t in scenario.truth]
    by_dev: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        for d in item.devices:
            by_dev[d].append(i)
    matched: dict[int, list[int]] = {}
    for a_i, r in enumerate(alerts):
        for t_i in by_dev.get(r.alert.device_id, ()):
            item = items[t_i]
            lo, hi = item.window()
            if not lo <= r.alert.ts <= hi:
                continue
            kind = item.truth.kind
            if r.sig in DETECTS[kind]:
                item.hits.append(r)
                matched.setdefault(a_i, []).append(t_i)
            elif r.sig in ALSO[kind]:
                matched.setdefault(a_i, []).append(t_i)
    # which trip a device was on at a given time: trucks run several trips, a box exactly one
    spans: dict[str, list[tuple[datetime, datetime, bool]]] = defaultdict(list)
    for t in scenario.trip_log:
        clean = t.anomaly is None
        spans[t.truck].append((t.start, t.end, clean))
        spans[t.container].append((t.start, t.end + timedelta(hours=1), clean))
    false = [r for i, r in enumerate(alerts) if i not in matched]
    on_clean: list[Raised] = []
    unassigned: list[Raised] = []
    for r in false:
        hit = [c for s, e, c in spans.get(r.alert.device_id, ()) if s - timedelta(seconds=EARLY_S) <= r.alert.ts <= e]
        if not hit:
            unassigned.append(r)
        elif hit[0]:
            on_clean.append(r)
    return Scored(items, list(alerts), matched, false, on_clean, unassigned, intervals)


# ----------------------------------------------------------------------------------------- figures


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return round(s[k], 1)


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def per_truth_kind(scored: Scored) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind in AnomalyKind:
        items = [it for it in scored.items if it.truth.kind is kind]
        if not items:
            continue
        detected = [it for it in items if it.hits]
        tta: list[float] = []
        after_threshold: list[float] = []
        late: list[float] = []  # beyond threshold + one reporting interval of the alerting device
        first_rules: Counter[str] = Counter()
        for it in detected:
            first = min(it.hits, key=lambda r: (r.at, r.alert.ts))
            start = it.truth.start
            t = (first.at - start).total_seconds()
            thr = threshold_s(first)
            iv = scored.intervals.get(first.alert.device_id, 0.0)
            tta.append(t)
            after_threshold.append(t - thr)
            late.append(t - thr - iv)
            first_rules[first.sig] += 1
        missed = [it for it in items if not it.hits]
        med_late = _median(late)
        out[kind.value] = {
            "injected": len(items),
            "detected": len(detected),
            "recall": round(len(detected) / len(items), 4),
            "tta_median_s": _median(tta),
            "tta_p95_s": _pct(tta, 0.95),
            "tta_after_threshold_median_s": _median(after_threshold),
            "tta_after_threshold_p95_s": _pct(after_threshold, 0.95),
            "beyond_threshold_plus_interval_median_s": med_late,
            "meets_tta_target": None if med_late is None else med_late <= 0.0,
            "first_alert_rules": dict(first_rules.most_common()),
            "tta_s": [round(x, 1) for x in tta],
            "missed": [
                {**it.truth.to_json(), "devices": sorted(it.devices), "interval_s": it.interval_s} for it in missed
            ],
        }
    return out


def per_alert_kind(scored: Scored) -> dict[str, dict[str, Any]]:
    totals: Counter[str] = Counter(r.sig for r in scored.alerts)
    good: Counter[str] = Counter(scored.alerts[i].sig for i in scored.matched)
    return {
        sig: {
            "alerts": n,
            "matching_truth": good[sig],
            "false": n - good[sig],
            "precision": round(good[sig] / n, 4),
        }
        for sig, n in sorted(totals.items())
    }


def alert_json(r: Raised) -> dict[str, Any]:
    a = r.alert
    return {
        "kind": r.sig,
        "severity": a.severity.value,
        "device_id": a.device_id,
        "ts": a.ts.isoformat(),
        "emitted_at": r.at.isoformat(),
        "message": a.message,
        "fence_id": a.fence_id,
    }


def summary(scenario: Scenario, scored: Scored) -> dict[str, Any]:
    n_alerts = len(scored.alerts)
    n_true = len(scored.matched)
    return {
        "security_alerts": n_alerts,
        "matching_truth": n_true,
        "precision": round(n_true / n_alerts, 4) if n_alerts else None,
        "false_alerts": len(scored.false),
        "false_alerts_on_clean_trips": len(scored.false_on_clean),
        "false_alerts_outside_trips": len(scored.false_unassigned),
        "false_per_1000_trips": round(1000 * len(scored.false) / max(1, scenario.trips), 2),
        "false_per_1000_clean_trips": round(1000 * len(scored.false_on_clean) / max(1, scenario.clean_trips), 2),
        "false_by_kind": dict(Counter(r.sig for r in scored.false).most_common()),
    }


def targets(
    kinds: Mapping[str, Mapping[str, Any]], overall: Mapping[str, Any], per_alert: Mapping[str, Any]
) -> dict[str, Any]:
    low_precision = {k: v["precision"] for k, v in per_alert.items() if v["precision"] < 0.95}
    return {
        "recall_1_every_kind": all(v["recall"] >= 1.0 for v in kinds.values()),
        "precision_ge_0_95_overall": overall["precision"] is not None and overall["precision"] >= 0.95,
        "alert_kinds_below_0_95": low_precision,
        "false_le_2_per_1000_clean_trips": overall["false_per_1000_clean_trips"] <= 2.0,
        "tta_median_le_threshold_plus_interval": {k: v["meets_tta_target"] for k, v in kinds.items()},
    }


# ---------------------------------------------------------------------------------------- running


@dataclass
class Run:
    config: SimConfig
    scenario: Scenario
    engine: Engine | None  # None when the alerts were loaded instead of replayed
    scored: Scored
    generate_s: float
    replay_s: float


def run(
    config: SimConfig, *, tick_every_s: float = 5.0, alerts_from: Path | None = None, pair_at_start: bool = False
) -> Run:
    """Generate, replay and score one scenario: the code path of the CLI and of the CI gate.

    ``alerts_from`` skips the replay and scores alerts saved by an earlier run of the same
    configuration (generation is deterministic for a seed), to iterate on the matching cheaply.
    """
    t0 = time.perf_counter()
    scenario = generate(config)
    t1 = time.perf_counter()
    engine: Engine | None = None
    if alerts_from is None:
        engine = replay(scenario, tick_every_s=tick_every_s, pair_at_start=pair_at_start)
        alerts = standing_alerts(engine.emitted)
    else:
        alerts = load_alerts(alerts_from)
    t2 = time.perf_counter()
    return Run(config, scenario, engine, score(scenario, alerts), t1 - t0, t2 - t1)


def save_alerts(alerts: Iterable[Raised], path: Path) -> None:
    """Standing alerts as JSONL, so the matching can be re-run (``--rescore``) without replaying a day."""
    with path.open("w", encoding="utf-8") as fh:
        for r in alerts:
            fh.write(json.dumps({**r.alert.to_json(), "emitted_at": r.at.isoformat()}) + "\n")


def load_alerts(path: Path) -> list[Raised]:
    out: list[Raised] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            o = json.loads(line)
            alert = Alert(
                kind=o["kind"],
                severity=Severity(o["severity"]),
                device_id=o["device_id"],
                ts=datetime.fromisoformat(o["ts"]),
                message=o["message"],
                port=o.get("port"),
                fence_id=o.get("fence_id"),
                evidence=o.get("evidence") or {},
                key=o["id"],
            )
            out.append(Raised(alert, datetime.fromisoformat(o["emitted_at"])))
    return out


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def report(r: Run, *, tick_every_s: float, pair_at_start: bool = False) -> dict[str, Any]:
    sc = r.scenario
    kinds = per_truth_kind(r.scored)
    per_alert = per_alert_kind(r.scored)
    overall = summary(sc, r.scored)
    return {
        "benchmark": "detection",
        "scenario": {
            "port": r.config.port,
            "trucks": r.config.trucks,
            "hours": r.config.hours,
            "anomaly_share": r.config.anomaly_share,
            "seed": r.config.seed,
            "style": r.config.style.value,
            "start": sc.start.isoformat(),
            "gps_sigma_m": r.config.gps.sigma_m,
        },
        "matching": {
            "early_s": EARLY_S,
            "grace_s": GRACE_S,
            "security_severities": sorted(s.value for s in SECURITY),
            "detects": {k.value: sorted(v) for k, v in DETECTS.items()},
            "also_true": {k.value: sorted(v) for k, v in ALSO.items()},
            "tick_every_s": tick_every_s,
            "pairing": "declared at scenario start" if pair_at_start else "declared per haul (pick-up to hand-over)",
        },
        "counts": {
            "trips": sc.trips,
            "clean_trips": sc.clean_trips,
            "devices": len(sc.devices),
            "pings": len(sc.pings),
            "inspections": len(sc.inspections),
            "truth_items": len(sc.truth),
            "anomalies_not_staged": sc.unstaged,
            "truck_km": round(sc.km, 1),
            "events_emitted": None if r.engine is None else len(r.engine.emitted),
            "engine_flags": None if r.engine is None else dict(sorted(r.engine.flags.items())),
        },
        "overall": overall,
        "targets": targets(kinds, overall, per_alert),
        "by_truth_kind": kinds,
        "by_alert_kind": per_alert,
        "false_alerts": [alert_json(a) for a in r.scored.false],
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "generate_s": round(r.generate_s, 1),
        "replay_s": round(r.replay_s, 1),
        "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def table(res: Mapping[str, Any]) -> str:
    def f(v: Any) -> str:
        return "-" if v is None else str(v)

    lines = [
        f"{'injected kind':<27} {'n':>4} {'recall':>7} {'tta med':>8} {'tta p95':>8} "
        f"{'>thr med':>9} {'>thr p95':>9} {'target':>7}",
    ]
    for k, v in res["by_truth_kind"].items():
        lines.append(
            f"{k:<27} {v['injected']:>4} {v['recall']:>7.3f} {f(v['tta_median_s']):>8} {f(v['tta_p95_s']):>8} "
            f"{f(v['tta_after_threshold_median_s']):>9} {f(v['tta_after_threshold_p95_s']):>9} "
            f"{f(v['meets_tta_target']):>7}"
        )
    lines.append("")
    lines.append(f"{'alert kind':<36} {'alerts':>7} {'true':>6} {'false':>6} {'precision':>9}")
    for k, v in res["by_alert_kind"].items():
        lines.append(f"{k:<36} {v['alerts']:>7} {v['matching_truth']:>6} {v['false']:>6} {v['precision']:>9.3f}")
    o = res["overall"]
    c = res["counts"]
    lines.append("")
    lines.append(
        f"{c['trips']} trips ({c['clean_trips']} clean), {o['security_alerts']} security alerts, "
        f"precision {f(o['precision'])}, {o['false_alerts']} false ({o['false_alerts_on_clean_trips']} on clean trips, "
        f"{o['false_alerts_outside_trips']} outside any trip): {o['false_per_1000_trips']} per 1,000 trips, "
        f"{o['false_per_1000_clean_trips']} per 1,000 clean trips"
    )
    lines.append(f"generate {res['generate_s']} s, replay {res['replay_s']} s")
    return "\n".join(lines)


def markdown(res: Mapping[str, Any]) -> str:
    """The figures of a result file as the Markdown the READMEs quote, so no figure is copied by hand."""
    sc = res["scenario"]
    o = res["overall"]
    c = res["counts"]
    lines = [
        f"{sc['port'].capitalize()}: {sc['trucks']} trucks, {sc['hours']:g} h, anomaly share {sc['anomaly_share']}, "
        f"seed {sc['seed']}; commit {str(res.get('git_commit') or '?')[:7]}",
        "",
        "| injected kind | n | recall | tta median s | tta p95 s | median beyond threshold + interval s | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, v in res["by_truth_kind"].items():
        lines.append(
            f"| {kind} | {v['injected']} | {v['recall']:.3f} | {v['tta_median_s']} | {v['tta_p95_s']} | "
            f"{v['beyond_threshold_plus_interval_median_s']} | {'yes' if v['meets_tta_target'] else 'no'} |"
        )
    false_by_kind = ", ".join(f"{k} {n}" for k, n in o["false_by_kind"].items()) or "none"
    lines += [
        "",
        f"{c['trips']} trips ({c['clean_trips']} clean), {o['security_alerts']} security alerts, precision "
        f"{o['precision']}; {o['false_alerts']} false alerts ({o['false_alerts_on_clean_trips']} on clean trips, "
        f"{o['false_alerts_outside_trips']} outside any trip) = {o['false_per_1000_trips']} per 1,000 trips, "
        f"{o['false_per_1000_clean_trips']} per 1,000 clean trips. False by kind: {false_by_kind}. "
        f"Generation {res['generate_s']} s, replay {res['replay_s']} s (one core).",
    ]
    return "\n".join(lines)


def plot(res: Mapping[str, Any], path: Path) -> str:
    """Strip plot of every detected item's time-to-alert per kind; skipped when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: plot skipped (pip install 'port-tracker[bench]')"
    kinds = [(k, v["tta_s"]) for k, v in res["by_truth_kind"].items() if v["tta_s"]]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(kinds) + 1.8))
    for i, (_, values) in enumerate(kinds):
        jitter = [i + ((j * 0.37) % 0.5 - 0.25) for j in range(len(values))]
        ax.scatter([max(v, 1.0) for v in values], jitter, s=10, alpha=0.6)
        ax.vlines(max(statistics.median(values), 1.0), i - 0.35, i + 0.35, colors="black")
    ax.set_yticks(range(len(kinds)), [k for k, _ in kinds])
    ax.set_xscale("log")
    ax.set_xlabel("time to alert from truth start (s, log; bar = median)")
    sc = res["scenario"]
    ax.set_title(
        f"{sc['port']}: {sc['trucks']} trucks, {sc['hours']} h, anomaly share {sc['anomaly_share']}, seed {sc['seed']}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", default="santos")
    p.add_argument("--trucks", type=int, default=500)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--anomaly-share", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--style",
        choices=[s.value for s in StagingStyle],
        default=StagingStyle.CLEAR.value,
        help="anomaly staging: clear (unambiguous) or edge (night, sparse trackers, congestion, near zones)",
    )
    p.add_argument("--tick-every", type=float, default=5.0, help="engine timer period, s")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="PNG of time-to-alert per kind")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--pair-at-start", action="store_true", help="declare every pair at the start, never clear it")
    p.add_argument("--save-alerts", type=Path, default=None, help="write the standing security alerts as JSONL")
    p.add_argument("--rescore", type=Path, default=None, help="score alerts saved by --save-alerts, no replay")
    p.add_argument("--markdown", type=Path, default=None, help="print a result file's figures as Markdown, no run")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text(encoding="utf-8"))))
        return 0
    cfg = SimConfig(
        port=args.port,
        trucks=args.trucks,
        hours=args.hours,
        anomaly_share=args.anomaly_share,
        seed=args.seed,
        style=StagingStyle(args.style),
    )
    r = run(cfg, tick_every_s=args.tick_every, alerts_from=args.rescore, pair_at_start=args.pair_at_start)
    if args.save_alerts is not None:
        save_alerts(r.scored.alerts, args.save_alerts)
    res = report(r, tick_every_s=args.tick_every, pair_at_start=args.pair_at_start)
    if args.rescore is not None:
        res["rescored_from"] = str(args.rescore)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(table(res))
    print(f"wrote {args.out}")
    if not args.no_plot:
        print(plot(res, args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
