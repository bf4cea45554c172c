"""``python bench/dashboard.py``: frame time of the dashboard with 5,000 devices at 1 ping/s, in headless chromium.

The page (tracker/web, served by the real ``api_web`` routes with its Content-Security-Policy) runs
in Debian's chromium through Playwright. What it reads from the API at log-in is answered with fixed
data by this runner (the real OpenAPI document, the real Santos fences, an empty alert list and no
``/v1/stream``): the benchmark measures the browser's work, not the service's. Positions come in
the way ``/v1/stream`` sends them: a generator inside the page builds, every 250 ms, one
``{"type":"positions","items":[...]}`` message as a JSON string with a quarter of the devices (each
device once a second, moving at 5-15 m/s with its heading), parses it and hands it to the page's
``trackerDashboard.ingestPositions`` (the WebSocket handler's own call). The map shows the whole port
(every device on screen, with its trail).

Measured over ``--seconds`` after ``--warmup``: the page's own work per animation frame (apply the
queued positions, redraw the device canvas), and the interval between animation frames (what a
viewer sees: 16.7 ms at 60 Hz; longer means dropped frames). Median, p95, p99 and max of each go to
``bench/results/dashboard.json``. Indicative on a shared machine: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from geofences import load_port  # noqa: E402
from tracker.adapters import api_web  # noqa: E402
from tracker.adapters.api import SERVICE  # noqa: E402
from tracker.adapters.openapi import document  # noqa: E402
from tracker.config import Settings  # noqa: E402
from tracker.service import Service  # noqa: E402

TOKEN = "bench-token"  # noqa: S105 (the runner's stand-in API answers any token)
GENERATOR = """
([n, centre, spanLon, spanLat]) => {
  const devs = [];
  for (let i = 0; i < n; i++) {
    devs.push({ id: `TRK-${String(i).padStart(5, "0")}`, lon: centre[0] + (Math.random() - 0.5) * spanLon,
      lat: centre[1] + (Math.random() - 0.5) * spanLat, heading: Math.random() * 360, v: 5 + Math.random() * 10 });
  }
  let part = 0;
  window.__benchTimer = setInterval(() => {
    const items = [];
    const now = new Date().toISOString();
    for (let i = part; i < n; i += 4) {
      const d = devs[i];
      d.heading = (d.heading + (Math.random() - 0.5) * 20 + 360) % 360;
      const a = d.heading * Math.PI / 180;
      d.lat += Math.cos(a) * d.v / 111320;
      d.lon += Math.sin(a) * d.v / (111320 * Math.cos(d.lat * Math.PI / 180));
      items.push({ device_id: d.id, kind: i % 3 ? "truck" : "container", ts: now, lon: d.lon, lat: d.lat,
        speed: d.v * 3.6, heading: d.heading, port: "santos" });
    }
    part = (part + 1) % 4;
    const message = JSON.stringify({ type: "positions", items });
    const parsed = JSON.parse(message);
    window.trackerDashboard.ingestPositions(parsed.items);
  }, 250);
  window.__intervals = [];
  let last = null;
  const tick = (t) => { if (last !== null) window.__intervals.push(t - last); last = t; requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

    return {
        "frames": len(ordered),
        "median_ms": round(statistics.median(ordered), 3),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1], 3),
    }


async def serve(port: int, fences: dict[str, Any]) -> web.AppRunner:
    app = web.Application()
    app[SERVICE] = Service(Settings())
    api_web.add_routes(app)

    async def openapi(request: web.Request) -> web.Response:
        doc = document()
        doc["paths"].pop("/v1/stream", None)
        return web.json_response(doc)

    async def fence_sets(request: web.Request) -> web.Response:
        return web.json_response({"ports": {"santos": fences}})

    async def alerts(request: web.Request) -> web.Response:
        return web.json_response({"alerts": []})

    async def alert_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            while True:
                await asyncio.sleep(15)
                await response.write(b": keep-alive\n\n")
        except ConnectionError:  # the page went away: the end of the run
            return response

    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/v1/fences", fence_sets)
    app.router.add_get("/v1/alerts", alerts)
    app.router.add_get("/v1/alerts/stream", alert_stream)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port_set = load_port("santos")
    inner = [f for f in port_set.fences if f.kind.value not in ("port_boundary", "corridor")]
    xs = [b for f in inner for b in (f.geometry.bounds[0], f.geometry.bounds[2])]
    ys = [b for f in inner for b in (f.geometry.bounds[1], f.geometry.bounds[3])]
    centre = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2]
    port = free_port()
    runner = await serve(port, port_set.to_geojson())
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=args.chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            page = await browser.new_page(viewport={"width": args.width, "height": args.height})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"http://127.0.0.1:{port}/")
            await page.fill("#token", TOKEN)
            await page.click("#connect")
            await page.wait_for_function("() => window.trackerDashboard.fenceCount() > 0")
            span = [(max(xs) - min(xs)) * 0.8, (max(ys) - min(ys)) * 0.8]
            await page.evaluate(GENERATOR, [args.devices, centre, span[0], span[1]])
            await asyncio.sleep(args.warmup)
            await page.evaluate(
                "() => { window.__intervals = []; window.__work0 = window.trackerDashboard.frameWork().length; }"
            )
            await asyncio.sleep(args.seconds)
            work = await page.evaluate("() => window.trackerDashboard.frameWork().slice(window.__work0)")
            intervals = await page.evaluate("() => window.__intervals.slice()")
            shown = await page.evaluate("() => window.trackerDashboard.deviceIds().length")
            if args.screenshot:
                await page.screenshot(path=str(args.screenshot))
            version = browser.version
            await browser.close()
    finally:
        await runner.cleanup()
    if errors:
        raise RuntimeError(f"the page failed: {errors}")
    return {
        "benchmark": "dashboard frame time",
        "devices": args.devices,
        "pings_per_device_per_s": 1,
        "messages_per_s": 4,
        "devices_on_map": shown,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "viewport": [args.width, args.height],
        "frame_work": summary(work),
        "frame_interval": summary(intervals),
        "frames_over_50ms": sum(1 for v in intervals if v > 50),
        "chromium": version,
        "headless": True,
        "machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2), "platform": platform.platform()},
    }


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshot", type=Path, default=None, help="also save a PNG of the page under load")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dashboard.json")
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 100_000 or not 0 < args.seconds <= 600:
        parser.error("--devices in [1, 100000], --seconds in (0, 600]")
    result = asyncio.run(run(args)) | {"git_commit": git_commit()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("devices_on_map", "frame_work", "frame_interval")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
