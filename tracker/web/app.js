// The operations dashboard: a map of the port (fences as the basemap, live devices on one canvas) and
// the alert feed beside it. Everything shown comes from the API with the token typed in (kept in
// sessionStorage, sent in the Authorization header and as the WebSocket's first message, never in a
// URL). What the server offers is read from its OpenAPI document, so the page uses /v1/stream, alert
// filters, reopen, trips and exports where they exist and falls back (SSE, polling of positions,
// filtering in the page) where they do not. Data from devices is only ever set as text, never as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const FENCE_COLOURS = {
    port_boundary: "#263238", terminal: "#5c6bc0", gate: "#00897b", inspection_area: "#8e24aa",
    customs_yard: "#8d6e63", authorized_parking: "#43a047", quay: "#1e88e5", restricted: "#e53935",
    corridor: "#9e9e9e",
  };
  const FENCE_LABELS = {
    port_boundary: "Port boundary", terminal: "Terminal", gate: "Gate", inspection_area: "Inspection area",
    customs_yard: "Customs yard", authorized_parking: "Authorized parking", quay: "Quay", restricted: "Restricted",
    corridor: "Corridor (road)",
  };
  const DEVICE_COLOURS = { truck: "#ff6f00", container: "#1565c0", seal: "#6a1b9a", other: "#455a64" };
  const SEV_RANK = { info: 0, low: 1, medium: 2, high: 3, critical: 4 };
  const TRAIL = 6; // points of the short trail behind each device
  const MAX_FEED = 400; // rows drawn in the feed (all alerts are kept)
  const TOKEN_KEY = "tracker-token";
  const PORT_KEY = "tracker-port";

  const S = {
    token: "", caps: null, role: null, org: null, port: null, ports: {},
    fenceLayers: {}, fenceById: new Map(), fenceGroups: new Map(),
    alerts: new Map(), selectedAlert: null, lastEventId: null, canAlerts: false,
    devices: new Map(), pending: [], dirty: false, frameQueued: false, selectedDevice: null,
    live: null, retry: 0, retryTimer: null, pollTimer: null, refreshTimer: null, watch: new Set(),
    audio: null, cues: 0, frameWork: [], generation: 0,
  };

  // ---- small helpers --------------------------------------------------------------------------

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  const fmtTs = (ts) => (ts ? String(ts).replace("T", " ").slice(0, 19) : "");
  const fmtS = (s) => (s >= 3600 ? `${(s / 3600).toFixed(1)} h` : s >= 90 ? `${Math.round(s / 60)} min` : `${Math.round(s)} s`);
  const txt = (s) => el("span", null, s); // Leaflet sets a string tooltip as HTML: names from files must not be
  const isContainerNo = (s) => /^[A-Z]{4}[0-9]{7}$/.test(s || "");

  function setStatus(text, state) {
    const s = $("status");
    s.textContent = text;
    s.dataset.state = state;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${S.token}`, ...(options.headers || {}) };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
    const type = r.headers.get("content-type") || "";
    const body = type.includes("json") ? await r.json() : await r.text();
    if (!r.ok) throw new ApiError(r.status, typeof body === "object" ? body : null);
    return body;
  }

  // ---- what the server offers (its OpenAPI document, served without a token) --------------------

  async function loadCaps() {
    const r = await fetch("/v1/openapi.json", { cache: "no-store", credentials: "omit" });
    const doc = await r.json();
    const paths = doc.paths || {};
    const params = (path, method) =>
      new Set(((paths[path] || {})[method] || {}).parameters?.filter((p) => p.in === "query").map((p) => p.name) || []);
    const has = (path, method = "get") => Boolean(paths[path] && paths[path][method]);
    const find = (re, method = "get") => Object.keys(paths).find((p) => re.test(p) && paths[p][method]) || null;
    S.caps = {
      has,
      stream: has("/v1/stream"),
      alertParams: params("/v1/alerts", "get"),
      reopen: has("/v1/alerts/{alert_id}/reopen", "post"),
      assign: has("/v1/alerts/{alert_id}/assign", "post"),
      resolution: JSON.stringify((paths["/v1/alerts/{alert_id}/resolve"] || {}).post || {}).includes("false_alarm"),
      devices: has("/v1/devices"),
      deviceTrips: find(/^\/v1\/devices\/\{[^}]+\}\/trips$/),
      containerTrips: find(/^\/v1\/containers\/\{[^}]+\}\/trips$/),
      trip: find(/^\/v1\/trips\/\{[^}]+\}$/),
      tripExport: find(/^\/v1\/trips\/\{[^}]+\}\/export$/),
      deviceExport: find(/^\/v1\/devices\/\{[^}]+\}\/export$/),
      containerExport: find(/^\/v1\/containers\/\{[^}]+\}\/export$/),
      alertHistory: has("/v1/alerts/{alert_id}"),
      custody: find(/^\/v1\/containers\/\{[^}]+\}\/custody$/),
      coverage: find(/^\/v1\/coverage$/),
    };
  }

  // ---- the map --------------------------------------------------------------------------------

  const map = L.map("map", { preferCanvas: true, zoomControl: true, attributionControl: true, minZoom: 3 });
  map.attributionControl.setPrefix("Leaflet");
  map.setView([0, 0], 3);
  const canvas = L.canvas({ padding: 0.3 });
  const tileUrl = document.querySelector('meta[name="tracker-tile-url"]').content;
  if (tileUrl) L.tileLayer(tileUrl, { maxZoom: 19, attribution: "tiles: configured server" }).addTo(map);
  const fenceRoot = L.layerGroup().addTo(map);
  const trackLayer = L.layerGroup().addTo(map);
  const evidenceLayer = L.layerGroup().addTo(map);
  const alertLayer = L.layerGroup().addTo(map);
  map.createPane("devices").style.zIndex = 450;

  function updateLabels() {
    $("map").classList.toggle("no-labels", map.getZoom() < 15);
    $("map").classList.toggle("few-labels", map.getZoom() < 17); // the big overlapping yards only close up
  }
  map.on("zoomend", updateLabels);

  function drawFences(port, fc) {
    const group = L.layerGroup();
    const features = [...fc.features].sort(
      (a, b) => (a.properties.kind === "port_boundary" ? -1 : 0) - (b.properties.kind === "port_boundary" ? -1 : 0),
    );
    for (const f of features) {
      const p = f.properties || {};
      const colour = FENCE_COLOURS[p.kind] || "#607d8b";
      const layer = L.geoJSON(f, {
        renderer: canvas,
        style: {
          color: colour, weight: p.kind === "port_boundary" ? 3 : 1.5, fillColor: colour,
          fillOpacity: p.kind === "port_boundary" ? 0.03 : p.kind === "corridor" ? 0.12 : 0.25,
          dashArray: p.kind === "port_boundary" ? "8 6" : null,
        },
        interactive: true,
      });
      layer.bindTooltip(txt(`${FENCE_LABELS[p.kind] || p.kind}: ${p.name || p.id}`), { sticky: true });
      if (p.kind !== "corridor" && p.kind !== "port_boundary") {
        const centre = layer.getBounds().getCenter();
        const label = L.tooltip({ permanent: true, direction: "center", className: `fence-label k-${p.kind}`, interactive: false })
          .setLatLng(centre)
          .setContent(txt(`${FENCE_LABELS[p.kind] || p.kind}${p.name ? ": " + String(p.name).slice(0, 28) : ""}`));
        group.addLayer(label);
      }
      group.addLayer(layer);
      S.fenceById.set(p.id, { feature: f, layer, port });
    }
    S.fenceGroups.set(port, group);
  }

  function legend() {
    const box = $("legend");
    box.replaceChildren(el("b", null, "Fences"));
    const kinds = new Set();
    for (const { feature } of S.fenceById.values()) kinds.add(feature.properties.kind);
    for (const kind of Object.keys(FENCE_COLOURS)) {
      if (!kinds.has(kind)) continue;
      const row = el("div");
      const sw = el("span", "sw");
      sw.style.background = FENCE_COLOURS[kind];
      row.append(sw, FENCE_LABELS[kind]);
      box.append(row);
    }
    if (!kinds.size) box.append(el("div", "muted", "none available to this token"));
    box.append(el("b", null, "Devices (arrow: heading)"));
    for (const kind of ["truck", "container", "seal"]) {
      const row = el("div");
      const tri = el("span", "dev");
      tri.style.borderBottomColor = DEVICE_COLOURS[kind];
      row.append(tri, kind);
      box.append(row);
    }
    box.append(el("div", "muted", `${S.devices.size} on the map`));
    box.lastChild.id = "device-count";
  }

  function choosePort(port) {
    S.port = port;
    fenceRoot.clearLayers();
    const group = S.fenceGroups.get(port);
    if (group) {
      fenceRoot.addLayer(group);
      // the working areas, not the whole boundary (a port's legal polygon reaches far beyond its terminals)
      const inner = [...S.fenceById.values()].filter((f) => f.port === port && !["port_boundary", "corridor"].includes(f.feature.properties.kind));
      const all = [...S.fenceById.values()].filter((f) => f.port === port);
      const pick = inner.length ? inner : all;
      if (pick.length) map.fitBounds(L.featureGroup(pick.map((f) => f.layer)).getBounds());
    }
    for (const [id, d] of S.devices) if (port && d.port && d.port !== port) S.devices.delete(id);
    updateLabels();
    scheduleFrame();
    if (S.live) reloadAlerts(); // the list is the port's when the API filters by port
    if (S.live && S.live.kind === "ws") {
      // a subscription is made once per connection: another port is a new one, resumed where this one was
      S.live.close();
      startWs();
    }
  }

  async function loadFences() {
    const body = await api("/v1/fences");
    S.ports = body.ports || {};
    const picker = $("port");
    picker.replaceChildren();
    for (const port of Object.keys(S.ports).sort()) {
      drawFences(port, S.ports[port]);
      picker.append(new Option(port, port));
    }
    legend();
    const saved = localStorage.getItem(PORT_KEY); // the port this screen watched last (not a secret)
    const first = saved in S.ports ? saved : Object.keys(S.ports).sort()[0];
    if (first) {
      picker.value = first;
      choosePort(first);
    }
  }
  $("port").onchange = (e) => {
    localStorage.setItem(PORT_KEY, e.target.value);
    choosePort(e.target.value);
  };

  // ---- devices: one canvas, redrawn at most once per animation frame ----------------------------

  const DeviceLayer = L.Layer.extend({
    onAdd(m) {
      this._canvas = L.DomUtil.create("canvas", "leaflet-devices", m.getPane("devices"));
      this._ctx = this._canvas.getContext("2d");
      m.on("moveend zoomend resize viewreset", scheduleFrame);
      m.on("move", scheduleFrame);
    },
    onRemove(m) {
      L.DomUtil.remove(this._canvas);
      m.off("moveend zoomend resize viewreset move", scheduleFrame);
    },
    draw() {
      const m = this._map;
      if (!m) return;
      const size = m.getSize();
      const dpr = window.devicePixelRatio || 1;
      const c = this._canvas;
      if (c.width !== size.x * dpr || c.height !== size.y * dpr) {
        c.width = size.x * dpr;
        c.height = size.y * dpr;
        c.style.width = `${size.x}px`;
        c.style.height = `${size.y}px`;
      }
      const topLeft = m.containerPointToLayerPoint([0, 0]);
      L.DomUtil.setPosition(c, topLeft);
      const ctx = this._ctx;
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, size.x, size.y);
      const zoom = m.getZoom();
      const origin = m.getPixelOrigin();
      const ox = origin.x + topLeft.x, oy = origin.y + topLeft.y;
      const byKind = new Map();
      const r = zoom >= 16 ? 8 : zoom >= 14 ? 6 : 4;
      const scale = 256 * 2 ** zoom;
      this.scale = scale;
      for (const d of S.devices.values()) {
        if (d.scale !== scale) {
          d.proj = d.trail.map(([lat, lon]) => mercator(lat, lon, scale));
          d.scale = scale;
        }
        const p = d.proj[d.proj.length - 1];
        const x = p.x - ox, y = p.y - oy;
        if (x < -20 || y < -20 || x > size.x + 20 || y > size.y + 20) continue;
        d.sx = x;
        d.sy = y;
        const kind = DEVICE_COLOURS[d.kind] ? d.kind : "other";
        let list = byKind.get(kind);
        if (!list) byKind.set(kind, (list = []));
        list.push(d);
      }
      ctx.lineWidth = 1.5;
      ctx.globalAlpha = 0.5;
      for (const [kind, list] of byKind) {
        ctx.strokeStyle = DEVICE_COLOURS[kind];
        ctx.beginPath();
        for (const d of list) {
          if (d.proj.length < 2) continue;
          ctx.moveTo(d.proj[0].x - ox, d.proj[0].y - oy);
          for (let i = 1; i < d.proj.length; i++) ctx.lineTo(d.proj[i].x - ox, d.proj[i].y - oy);
        }
        ctx.stroke();
      }
      ctx.globalAlpha = 1;
      // The arrows are written as pixels into one buffer and put on the canvas with a single blit: with
      // thousands of devices, filling as many paths (or blitting as many small images) costs a frame
      // several times over on a software-rendered canvas (measured: bench/dashboard.py).
      const W = c.width, H = c.height;
      if (!this._buf || this._bufCanvas.width !== W || this._bufCanvas.height !== H) {
        this._bufCanvas = document.createElement("canvas");
        this._bufCanvas.width = W;
        this._bufCanvas.height = H;
        this._bufCtx = this._bufCanvas.getContext("2d");
        this._img = this._bufCtx.createImageData(W, H);
        this._buf = new Uint32Array(this._img.data.buffer);
      }
      const buf = this._buf;
      buf.fill(0);
      for (const [kind, list] of byKind) {
        for (const d of list) {
          const sp = sprite(kind, r, d.heading);
          const x0 = Math.round(d.sx * dpr) - sp.half, y0 = Math.round(d.sy * dpr) - sp.half;
          const { dx, dy, col } = sp;
          for (let i = 0; i < col.length; i++) {
            const x = x0 + dx[i], y = y0 + dy[i];
            if (x >= 0 && y >= 0 && x < W && y < H) buf[y * W + x] = col[i];
          }
        }
      }
      this._bufCtx.putImageData(this._img, 0, 0);
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.drawImage(this._bufCanvas, 0, 0);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      const sel = S.selectedDevice && S.devices.get(S.selectedDevice);
      if (sel && sel.sx !== undefined) {
        ctx.strokeStyle = "#000";
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.arc(sel.sx, sel.sy, r * 2, 0, 2 * Math.PI);
        ctx.stroke();
      }
    },
    hit(point, within = 12) {
      let best = null, bestD = within * within;
      for (const [id, d] of S.devices) {
        if (d.sx === undefined) continue;
        const dd = (d.sx - point.x) ** 2 + (d.sy - point.y) ** 2;
        if (dd < bestD) { best = id; bestD = dd; }
      }
      return best;
    },
  });
  const deviceLayer = new DeviceLayer().addTo(map);

  // An arrow per kind, size and 10° of heading (a dot without heading), drawn once and kept as the
  // list of its pixels (offsets and colours) that the device layer writes into its buffer.
  const sprites = new Map();
  function sprite(kind, r, heading) {
    const bucket = heading === null || heading === undefined ? -1 : Math.round(heading / 10) % 36;
    const key = `${kind}:${r}:${bucket}`;
    let sp = sprites.get(key);
    if (sp) return sp;
    const dpr = window.devicePixelRatio || 1;
    const c = document.createElement("canvas");
    const side = Math.ceil(r * 3 * dpr);
    c.width = c.height = side;
    const g = c.getContext("2d", { willReadFrequently: true });
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const m = (r * 3) / 2;
    g.fillStyle = DEVICE_COLOURS[kind];
    g.strokeStyle = "#fff";
    g.lineWidth = 1;
    g.beginPath();
    if (bucket < 0) g.arc(m, m, r * 0.7, 0, 2 * Math.PI);
    else {
      // pointing at the heading (0 = north, clockwise)
      const a = (bucket * 10 * Math.PI) / 180, sin = Math.sin(a), cos = Math.cos(a);
      g.moveTo(m + sin * r * 1.3, m - cos * r * 1.3);
      g.lineTo(m - sin * r * 0.8 + cos * r * 0.8, m + cos * r * 0.8 + sin * r * 0.8);
      g.lineTo(m - sin * r * 0.3, m + cos * r * 0.3);
      g.lineTo(m - sin * r * 0.8 - cos * r * 0.8, m + cos * r * 0.8 - sin * r * 0.8);
      g.closePath();
    }
    g.fill();
    if (r >= 6) g.stroke();
    const px = new Uint32Array(g.getImageData(0, 0, side, side).data.buffer);
    const dx = [], dy = [], col = [];
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        const v = px[y * side + x];
        if (v >>> 24 > 80) { dx.push(x); dy.push(y); col.push(v | 0xff000000); }
      }
    }
    sp = { half: Math.floor(side / 2), dx: Int16Array.from(dx), dy: Int16Array.from(dy), col: Uint32Array.from(col) };
    sprites.set(key, sp);
    return sp;
  }

  // Spherical Mercator in pixels at ``scale`` (256 * 2^zoom), as Leaflet's EPSG:3857 projects, without
  // its objects: the device layer projects every new fix of thousands of devices.
  const R_LAT = 85.0511287798;
  function mercator(lat, lon, scale) {
    const la = Math.max(-R_LAT, Math.min(R_LAT, lat)) * (Math.PI / 180);
    return { x: ((lon + 180) / 360) * scale, y: (0.5 - Math.log(Math.tan(Math.PI / 4 + la / 2)) / (2 * Math.PI)) * scale };
  }

  function ingestPositions(items) {
    for (const it of items) S.pending.push(it);
    scheduleFrame();
  }

  function scheduleFrame() {
    S.dirty = true;
    if (!S.frameQueued) {
      S.frameQueued = true;
      requestAnimationFrame(frame);
    }
  }

  function frame() {
    S.frameQueued = false;
    if (!S.dirty) return;
    const t0 = performance.now();
    S.dirty = false;
    const batch = S.pending;
    S.pending = [];
    for (const it of batch) applyPosition(it);
    deviceLayer.draw();
    const count = $("device-count");
    if (count) count.textContent = `${S.devices.size} on the map`;
    const dt = performance.now() - t0;
    S.frameWork.push(dt);
    if (S.frameWork.length > 5000) S.frameWork.splice(0, 1000);
  }

  function applyPosition(it) {
    if (S.port && it.port && it.port !== S.port) return;
    if (typeof it.lat !== "number" || typeof it.lon !== "number") return;
    let d = S.devices.get(it.device_id);
    if (!d) {
      d = { id: it.device_id, kind: it.kind, trail: [], proj: [], scale: null, ts: null };
      S.devices.set(it.device_id, d);
    }
    if (d.ts && it.ts && it.ts < d.ts) return; // late fix: the map shows where it is now
    d.ts = it.ts;
    d.kind = it.kind || d.kind;
    d.port = it.port || d.port;
    d.speed = it.speed;
    d.heading = it.heading;
    d.trail.push([it.lat, it.lon]);
    if (d.scale) d.proj.push(mercator(it.lat, it.lon, d.scale));
    if (d.trail.length > TRAIL) {
      d.trail.shift();
      if (d.proj.length > TRAIL) d.proj.shift();
    }
  }

  map.on("click", (e) => {
    const id = deviceLayer.hit(e.containerPoint);
    if (id) showDevice(id);
  });

  // ---- detail panel ---------------------------------------------------------------------------

  function openDetail(...children) {
    $("detail-body").replaceChildren(...children);
    $("detail").hidden = false;
  }
  $("detail-close").onclick = () => {
    $("detail").hidden = true;
    evidenceLayer.clearLayers();
    trackLayer.clearLayers();
    S.selectedDevice = null;
    S.selectedAlert = null;
    renderFeed();
    scheduleFrame();
  };

  function table(rows) {
    const t = el("table");
    for (const [k, v] of rows) {
      if (v === undefined || v === null || v === "") continue;
      const tr = el("tr");
      tr.append(el("td", null, k), el("td", null, v));
      t.append(tr);
    }
    return t;
  }

  // Points with lon/lat anywhere in a JSON value (an alert's evidence, a trip), with the path naming them.
  function points(value, path = "", out = []) {
    if (Array.isArray(value)) value.forEach((v, i) => points(v, `${path}[${i}]`, out));
    else if (value && typeof value === "object") {
      if (typeof value.lon === "number" && typeof value.lat === "number") out.push({ path, ...value });
      for (const [k, v] of Object.entries(value)) if (v && typeof v === "object") points(v, path ? `${path}.${k}` : k, out);
    }
    return out;
  }

  function fenceIds(ev) {
    const ids = [];
    const add = (f, role) => {
      const id = typeof f === "string" ? f : f && f.id;
      if (id) ids.push({ id, role });
    };
    if (ev.fence) add(ev.fence, "fence");
    for (const f of ev.fences || []) add(f, "inside");
    if (ev.closed_by && ev.closed_by.fence) add(ev.closed_by.fence, "closed by");
    if (ev.nearest_route_fence) add(ev.nearest_route_fence, "route left");
    if (ev.threshold_fence) add(ev.threshold_fence, "threshold");
    return ids;
  }

  // What the evidence links: where it was before and after, the two devices of a meeting...
  const LINKS = [
    ["previous_fix", "fix"], ["last_fix_before", "first_fix_after"], ["container_fix", "truck.fix"],
    ["devices[0].fix", "devices[1].fix"], ["fix", "other.fix"], ["first_off_route_fix", "fix"],
  ];

  function timeline(a, ev) {
    const items = [];
    const add = (ts, what) => ts && items.push([String(ts), what]);
    if (ev.clearance) add(ev.clearance.ts, `customs clearance at ${ev.clearance.facility || "?"} (seal ${ev.clearance.seal || "?"})`);
    add(ev.stationary_since, "standing still since");
    add(ev.started_at, "started");
    add(ev.unauthorized_since, "outside authorized zones since");
    add(ev.together_since, "together since");
    add(ev.burst_started_at, "first implausible fix");
    if (ev.first_off_route_fix) add(ev.first_off_route_fix.ts, "first fix off the route");
    if (ev.last_fix) add(ev.last_fix.ts, "last fix");
    if (ev.last_fix_before) add(ev.last_fix_before.ts, "last fix before the silence");
    if (ev.first_fix_after) add(ev.first_fix_after.ts, "first fix after");
    add(ev.closed_at, "window closed");
    add(a.ts, `alert: ${a.kind}`);
    items.sort((x, y) => (x[0] < y[0] ? -1 : 1));
    const base = ev.clearance ? Date.parse(ev.clearance.ts) : null;
    const ol = el("ol", "timeline");
    for (const [ts, what] of items) {
      const rel = base ? ` (+${fmtS((Date.parse(ts) - base) / 1000)})` : "";
      ol.append(el("li", null, `${fmtTs(ts)}${rel} ${what}`));
    }
    return ol;
  }

  function get(obj, path) {
    return path.split(/\.|\[|\]/).filter(Boolean).reduce((o, k) => (o == null ? undefined : o[k]), obj);
  }

  function drawEvidence(a) {
    evidenceLayer.clearLayers();
    trackLayer.clearLayers();
    const ev = a.evidence || {};
    const bounds = [];
    for (const { id, role } of fenceIds(ev)) {
      const f = S.fenceById.get(id);
      if (!f) continue;
      const hl = L.geoJSON(f.feature, {
        renderer: canvas, interactive: false,
        style: { color: role === "route left" ? "#ff00ff" : "#000", weight: role === "inside" ? 2 : 4,
          dashArray: role === "route left" ? "6 4" : null, fill: false },
      });
      evidenceLayer.addLayer(hl);
      if (role !== "inside" || f.feature.properties.kind !== "port_boundary") bounds.push(hl.getBounds());
    }
    if (ev.centre && ev.radius_m !== undefined) {
      const c = L.circle([ev.centre.lat, ev.centre.lon], { renderer: canvas, radius: Math.max(ev.radius_m, 10), color: "#d50000", weight: 2, fillOpacity: 0.15 });
      c.bindTooltip(txt(`stop ${ev.duration_s ? fmtS(ev.duration_s) : ""}`), { permanent: true, className: "ev-label" });
      evidenceLayer.addLayer(c);
    }
    for (const [from, to] of LINKS) {
      const p = get(ev, from), q = get(ev, to);
      if (p && q && typeof p.lat === "number" && typeof q.lat === "number") {
        evidenceLayer.addLayer(L.polyline([[p.lat, p.lon], [q.lat, q.lon]], { renderer: canvas, color: "#d50000", weight: 2, dashArray: "4 4" }));
      }
    }
    for (const p of points(ev)) {
      if (p.path === "centre") continue;
      const other = /^devices\[|^other|^truck/.test(p.path);
      const m = L.circleMarker([p.lat, p.lon], { renderer: canvas, radius: p.path === "fix" ? 7 : 5, color: other ? "#1565c0" : "#d50000", weight: 2, fillOpacity: 0.6 });
      const who = get(ev, p.path.replace(/\.fix$/, ""));
      const name = (who && (who.id || who.device_id)) || (other ? "" : a.device_id);
      m.bindTooltip(txt(`${p.path} ${name || ""} ${fmtTs(p.ts)}`), { className: "ev-label" });
      evidenceLayer.addLayer(m);
      bounds.push(L.latLngBounds([p.lat, p.lon], [p.lat, p.lon]));
    }
    if (bounds.length) {
      const b = bounds.reduce((acc, x) => acc.extend(x), L.latLngBounds(bounds[0].getSouthWest(), bounds[0].getNorthEast()));
      map.fitBounds(b.pad(0.6), { maxZoom: 16, animate: false });
    }
    // the device's own track around the alert
    const t = Date.parse(a.ts);
    if (a.device_id && !Number.isNaN(t)) {
      const from = new Date(t - 15 * 60e3).toISOString(), to = new Date(t + 5 * 60e3).toISOString();
      drawTrack(a.device_id, from, to, "#d50000").catch(() => {});
    }
  }

  async function drawTrack(device, from, to, colour) {
    const q = new URLSearchParams({ from, to, limit: "10000" });
    const body = await api(`/v1/devices/${encodeURIComponent(device)}/positions?${q}`);
    const line = body.features.map((f) => [f.geometry.coordinates[1], f.geometry.coordinates[0]]);
    if (line.length) trackLayer.addLayer(L.polyline(line, { renderer: canvas, color: colour, weight: 3, opacity: 0.7 }));
    return body;
  }

  async function showDevice(id) {
    S.selectedDevice = id;
    S.watch.add(id);
    scheduleFrame();
    evidenceLayer.clearLayers();
    trackLayer.clearLayers();
    const d = S.devices.get(id) || {};
    const info = el("div");
    openDetail(el("h3", null, `${d.kind || "device"} ${id}`),
      table([["last fix", fmtTs(d.ts)], ["speed", d.speed != null ? `${Math.round(d.speed)} km/h` : null],
        ["heading", d.heading != null ? `${Math.round(d.heading)}°` : null]]), info);
    const now = Date.now();
    try {
      const body = await drawTrack(id, new Date(now - 2 * 3600e3).toISOString(), new Date(now).toISOString(), "#ff6f00");
      info.append(el("div", "muted", `last 2 h: ${body.features.length} fixes${body.truncated ? " (truncated)" : ""}`));
    } catch (e) {
      info.append(el("div", "err", e.status === 404 ? "not found (or not in your scope)" : e.message));
      return;
    }
    if (S.caps.deviceTrips) {
      try {
        const body = await api(S.caps.deviceTrips.replace(/\{[^}]+\}/, encodeURIComponent(id)));
        const trips = body.trips || body.items || [];
        // oldest first; the open one is "closed": false (its "end" is its latest fix), else the latest closed one
        const open = trips.find((t) => t.closed === false);
        const current = open || trips[trips.length - 1];
        if (current) {
          info.append(el("h3", null, open ? "current trip" : "last trip"), tripSummary(current));
          drawTripPoints(current);
        } else info.append(el("div", "muted", "no trip"));
      } catch (e) {
        info.append(el("div", "err", `trips: ${e.message}`));
      }
    } else info.append(el("div", "muted", "trips are not served by this API version"));
  }

  function tripSummary(t) {
    const rows = [];
    for (const [k, v] of Object.entries(t)) {
      if (v === null || typeof v === "object") {
        if (v && typeof v === "object" && (v.name || v.id)) rows.push([k, v.name || v.id]);
        else if (Array.isArray(v)) rows.push([k, `${v.length}`]);
        continue;
      }
      rows.push([k, /_s$/.test(k) ? fmtS(v) : /_m$/.test(k) ? `${Math.round(v)} m` : String(v)]);
    }
    return table(rows);
  }

  function drawTripPoints(trip) {
    for (const p of points(trip)) {
      trackLayer.addLayer(L.circleMarker([p.lat, p.lon], { renderer: canvas, radius: 5, color: "#6a1b9a" }).bindTooltip(txt(p.path)));
    }
  }

  // ---- the alert feed -------------------------------------------------------------------------

  function alertContainer(a) {
    const ev = a.evidence || {};
    return a.container_no || (ev.clearance && ev.clearance.container_no) || ev.container_no || (isContainerNo(a.device_id) ? a.device_id : "");
  }

  function filters() {
    return {
      status: $("f-status").value, severity: $("f-severity").value, kind: $("f-kind").value,
      device: $("f-device").value.trim(), container: $("f-container").value.trim().toUpperCase(), info: $("f-info").checked,
    };
  }

  function passes(a, f) {
    if (f.status && a.status !== f.status) return false;
    if (f.severity && a.severity !== f.severity) return false;
    if (!f.severity && !f.info && a.severity === "info") return false;
    if (f.kind && a.kind !== f.kind) return false;
    if (S.port && a.port && a.port !== S.port) return false;
    if (f.device) {
      const others = (a.evidence && a.evidence.devices) || [];
      if (!String(a.device_id).includes(f.device) && !others.some((o) => String(o.id).includes(f.device))) return false;
    }
    if (f.container && !alertContainer(a).includes(f.container)) return false;
    return true;
  }

  let feedQueued = false;
  function renderFeed() {
    if (feedQueued) return;
    feedQueued = true;
    requestAnimationFrame(() => {
      feedQueued = false;
      const f = filters();
      const shown = [...S.alerts.values()].filter((a) => passes(a, f)).sort((x, y) => (x.ts < y.ts ? 1 : -1));
      const list = $("feed");
      list.replaceChildren(...shown.slice(0, MAX_FEED).map(row));
      $("feed-count").textContent = `${shown.length} of ${S.alerts.size} alerts`;
      const kinds = new Set([...S.alerts.values()].map((a) => a.kind));
      const sel = $("f-kind");
      const have = new Set([...sel.options].map((o) => o.value));
      for (const k of [...kinds].sort()) if (!have.has(k)) sel.append(new Option(k, k));
      drawAlertMarkers(shown);
    });
  }

  function row(a) {
    const li = el("li", `sev-${a.severity} status-${a.status}`);
    li.dataset.id = a.id;
    if (a._fresh && Date.now() - a._fresh < 3000) li.classList.add("fresh");
    if (S.selectedAlert === a.id) li.classList.add("selected");
    const r1 = el("div", "row1");
    r1.append(el("span", `sev ${a.severity}`, a.severity), el("b", null, a.kind), el("span", null, a.device_id),
      el("span", "st", a.status), el("span", "ts", fmtTs(a.ts)));
    li.append(r1, el("div", "msg", a.message));
    li.onclick = () => selectAlert(a.id);
    return li;
  }

  function alertFix(a) {
    const ev = a.evidence || {};
    return ev.fix || ev.container_fix || ev.last_fix || ev.first_fix_after || ev.centre || (ev.devices && ev.devices[0] && ev.devices[0].fix) || null;
  }

  function drawAlertMarkers(shown) {
    alertLayer.clearLayers();
    for (const a of shown.slice(0, 300)) {
      if (a.status === "resolved" || SEV_RANK[a.severity] < 2) continue;
      const p = alertFix(a);
      if (!p || typeof p.lat !== "number") continue;
      const m = L.circleMarker([p.lat, p.lon], {
        renderer: canvas, radius: SEV_RANK[a.severity] >= 3 ? 9 : 6, color: SEV_RANK[a.severity] >= 3 ? "#c62828" : "#ef6c00",
        weight: 3, fill: false,
      });
      m.bindTooltip(txt(`${a.severity} ${a.kind} ${a.device_id}`));
      m.on("click", (e) => {
        // the ring is drawn around the fix, where the device often still is: its arrow itself opens the device
        L.DomEvent.stopPropagation(e);
        const dev = deviceLayer.hit(e.containerPoint, 6);
        if (dev) showDevice(dev);
        else selectAlert(a.id);
      });
      alertLayer.addLayer(m);
    }
  }

  function upsert(a, fresh) {
    const before = S.alerts.get(a.id);
    if (before && before.status === a.status && !fresh) return;
    if (fresh && !before) {
      a._fresh = Date.now();
      if (SEV_RANK[a.severity] >= 3) cue(a);
      if (a.device_id) { S.watch.add(a.device_id); pollSoon(a.device_id); }
    }
    S.alerts.set(a.id, before ? { ...before, ...a, _fresh: before._fresh } : a);
    renderFeed();
    if (S.selectedAlert === a.id && before && before.status !== a.status) selectAlert(a.id, false);
  }

  function cue(a) {
    S.cues += 1;
    document.title = `(${S.cues}) ${a.severity.toUpperCase()} · port-tracker`;
    if ($("mute").checked || !S.audio) return;
    try {
      const ctx = S.audio;
      const osc = ctx.createOscillator(), gain = ctx.createGain();
      osc.type = "square";
      osc.frequency.value = a.severity === "critical" ? 1320 : 880;
      gain.gain.setValueAtTime(0.0001, ctx.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.2, ctx.currentTime + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 0.35);
      osc.connect(gain).connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.4);
    } catch (e) {
      /* no audio device: the visible cue stays */
    }
  }

  function selectAlert(id, zoom = true) {
    const a = S.alerts.get(id);
    if (!a) return;
    S.selectedAlert = id;
    renderFeed();
    const ev = a.evidence || {};
    const figures = [["status", a.status], ["device", a.device_id], ["port", a.port], ["fence", a.fence_id],
      ["container", alertContainer(a)], ["acknowledged", a.acknowledged_by ? `${a.acknowledged_by} ${fmtTs(a.acknowledged_at)}` : null],
      ["resolved", a.resolved_by ? `${a.resolved_by} ${fmtTs(a.resolved_at)} ${a.resolution || ""}` : null],
      ["assigned to", a.assignee || a.assigned_to], ["note", a.note || a.ack_note || a.resolution_note]];
    for (const k of ["duration_s", "since_clearance_s", "gap_s", "distance_m", "threshold_s", "fastest_kmh"]) {
      if (typeof ev[k] === "number") figures.push([k.replace(/_/g, " "), /_s$/.test(k) ? fmtS(ev[k]) : /_m$/.test(k) ? `${Math.round(ev[k])} m` : Math.round(ev[k])]);
    }
    if (ev.reason) figures.push(["reason", ev.reason]);
    if (ev.other) figures.push(["other device", ev.other.device_id]);
    if (ev.devices) figures.push(["devices", ev.devices.map((d) => d.id).join(", ")]);
    if (ev.truck) figures.push(["truck", ev.truck.id]);
    if (ev.nearest_route_fence) figures.push(["route left", `${ev.nearest_route_fence.name} (${Math.round(ev.nearest_route_fence.distance_m)} m)`]);
    const raw = el("details");
    raw.append(el("summary", null, "evidence (JSON)"), el("pre", null, JSON.stringify(ev, null, 1)));
    const history = el("div");
    openDetail(el("h3", null, `${a.severity} · ${a.kind}`), el("div", "msg", a.message), table(figures), timeline(a, ev), actions(a), history, raw);
    if (zoom) drawEvidence(a);
    if (S.caps.alertHistory) {
      api(`/v1/alerts/${encodeURIComponent(a.id)}`).then((full) => {
        if (S.selectedAlert !== a.id || !full.history) return;
        const ol = el("ol", "timeline");
        for (const h of full.history) {
          const extra = [h.resolution, h.assignee, h.note].filter(Boolean).join(" · ");
          ol.append(el("li", null, `${fmtTs(h.at)} ${h.fact} by ${h.by}${extra ? ": " + extra : ""}`));
        }
        history.replaceChildren(el("b", null, "history"), ol);
      }).catch(() => {});
    }
  }

  function actions(a) {
    const box = el("div");
    if (!S.canWrite) return box;
    const note = el("textarea");
    note.id = "action-note";
    note.rows = 2;
    note.placeholder = "note (kept with the change)";
    const bar = el("div", "actions");
    const msg = el("div", "err");
    const act = async (action, extra = {}) => {
      msg.textContent = "";
      const body = { ...extra };
      if (note.value.trim()) body.note = note.value.trim();
      try {
        const res = await api(`/v1/alerts/${encodeURIComponent(a.id)}/${action}`, { method: "POST", body: JSON.stringify(body) });
        const now = new Date().toISOString();
        const patch = { status: res.status || a.status };
        if (action === "ack") Object.assign(patch, { acknowledged_by: res.by, acknowledged_at: now });
        if (action === "resolve") Object.assign(patch, { resolved_by: res.by, resolved_at: now, resolution: extra.resolution });
        S.alerts.set(a.id, { ...S.alerts.get(a.id), ...(res.alert || {}), ...patch });
        renderFeed();
        selectAlert(a.id, false);
      } catch (e) {
        msg.textContent = `${action}: ${e.message}`;
      }
    };
    const button = (label, action, extra) => {
      const b = el("button", null, label);
      b.type = "button";
      b.dataset.action = action;
      b.onclick = () => act(action, extra ? extra() : {});
      bar.append(b);
    };
    if (a.status === "open" || a.status === "logged") button("Acknowledge", "ack");
    if (a.status !== "resolved") {
      let select = null;
      if (S.caps.resolution) {
        select = el("select");
        select.id = "action-resolution";
        for (const v of ["true_alarm", "false_alarm", "duplicate"]) select.append(new Option(v.replace("_", " "), v));
        bar.append(select);
      }
      button("Resolve", "resolve", () => (select ? { resolution: select.value } : {}));
    }
    if (S.caps.reopen && a.status !== "open" && a.status !== "logged") button("Reopen", "reopen");
    box.append(note, bar, msg);
    return box;
  }

  for (const id of ["f-status", "f-severity", "f-kind", "f-info"]) $(id).onchange = () => { renderFeed(); reloadAlerts(); };
  for (const id of ["f-device", "f-container"]) $(id).oninput = () => { renderFeed(); reloadAlertsSoon(); };
  let reloadTimer = null;
  function reloadAlertsSoon() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(reloadAlerts, 500);
  }

  async function loadAlerts() {
    const f = filters();
    const q = new URLSearchParams({ limit: "500" });
    const p = S.caps.alertParams;
    if (f.status && p.has("status")) q.set("status", f.status);
    if (f.severity && p.has("severity")) q.set("severity", f.severity);
    if (f.kind && p.has("kind")) q.set("kind", f.kind);
    if (f.device && p.has("device_id") && /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/.test(f.device)) q.set("device_id", f.device);
    const cparam = p.has("container_no") ? "container_no" : p.has("container") ? "container" : null;
    if (f.container && cparam && isContainerNo(f.container)) q.set(cparam, f.container);
    if (S.port && p.has("port")) q.set("port", S.port);
    const body = await api(`/v1/alerts?${q}`);
    for (const a of body.alerts || body.items || []) upsert(a, false);
    renderFeed();
  }

  async function reloadAlerts() {
    if (!S.canAlerts) return;
    try { await loadAlerts(); } catch (e) { banner(`alerts: ${e.message}`); }
  }

  function banner(text) {
    const b = $("banner");
    b.textContent = text;
    b.hidden = !text;
  }

  // ---- live: WebSocket /v1/stream, else SSE + polling -------------------------------------------

  function reconnectLater(why) {
    const wait = Math.min(15000, 1000 * 2 ** S.retry);
    S.retry += 1;
    setStatus(`reconnecting in ${Math.round(wait / 1000)} s (${why})`, "reconnecting");
    clearTimeout(S.retryTimer);
    const gen = S.generation;
    S.retryTimer = setTimeout(() => gen === S.generation && startLive(), wait);
  }

  function startLive() {
    if (S.caps.stream) startWs();
    else startSse();
  }

  function startWs() {
    const gen = S.generation;
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream`);
    let alerts = S.canAlerts;
    const live = { kind: "ws", ws, close() { ws.onclose = null; ws.onmessage = null; ws.close(); } };
    S.live = live;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "auth", token: S.token }));
      ws.send(JSON.stringify({ type: "subscribe", alerts, positions: true, port: S.port || null, last_event_id: S.lastEventId }));
    };
    ws.onmessage = (e) => {
      if (gen !== S.generation) return;
      const m = JSON.parse(e.data);
      if (m.type === "ready") {
        // back after a drop with no event id to resume from (none came before it): read the list again
        if (S.retry > 0 && !S.lastEventId && S.canAlerts) reloadAlerts();
        S.retry = 0;
        S.role = m.role || S.role;
        S.org = m.org || null;
        // readers (insurers, customs) get no buttons; what a writer may not do the API refuses with its reason
        if (S.role) S.canWrite = S.canAlerts && ["operator", "security", "admin"].includes(S.role);
        showWho();
        setStatus("live (WebSocket)", "live");
      } else if (m.type === "alert") {
        if (m.id) S.lastEventId = m.id;
        upsert(m.alert, m.event === "raised");
      } else if (m.type === "reset") {
        // more was missed than the server keeps: read the list again, then carry on live
        if (m.id) S.lastEventId = m.id;
        reloadAlerts();
      } else if (m.type === "positions") {
        ingestPositions(m.items || []);
      } else if (m.type === "error") {
        banner(`stream: ${m.message || m.error}`);
        if (m.error === "forbidden" && alerts) { alerts = false; }
      }
    };
    ws.onclose = (e) => {
      if (gen !== S.generation) return;
      if (e.code === 4001) { setStatus("token refused", "error"); return; }
      reconnectLater(e.code === 4008 ? "too slow" : `closed ${e.code}`);
    };
  }

  async function startSse() {
    const gen = S.generation;
    const ctl = new AbortController();
    S.live = { kind: "sse", close: () => ctl.abort() };
    if (!S.canAlerts) {
      setStatus("positions by polling", "live");
      startPolling();
      return;
    }
    try {
      const headers = { Authorization: `Bearer ${S.token}` };
      if (S.lastEventId) headers["Last-Event-ID"] = S.lastEventId;
      const r = await fetch("/v1/alerts/stream", { headers, signal: ctl.signal, cache: "no-store", credentials: "omit" });
      if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
      if (S.retry > 0 && !S.lastEventId) await reloadAlerts(); // no event ids to resume from: read what was missed
      S.retry = 0;
      setStatus("live (SSE; positions by polling)", "live");
      startPolling();
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let data = "", id = null, type = "message";
          for (const line of chunk.split("\n")) {
            if (line.startsWith("data:")) data += line.slice(5).trimStart();
            else if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("event:")) type = line.slice(6).trim();
          }
          if (id) S.lastEventId = id;
          if (!data || gen !== S.generation) continue;
          const m = JSON.parse(data);
          if (type === "reset") reloadAlerts(); // more was missed than the server keeps
          else if (type === "error") banner(`stream: ${m.message || m.error}`);
          else upsert(m.alert || m, (m.event || "raised") === "raised");
        }
      }
      if (gen === S.generation) reconnectLater("stream ended");
    } catch (e) {
      if (gen !== S.generation || e.name === "AbortError") return;
      if (e.status === 401) { setStatus("token refused", "error"); return; }
      reconnectLater(e.message);
    }
  }

  // Without /v1/stream: the devices named by alerts, clicked or listed are polled a few at a time.
  const pollCursor = new Map();
  let pollQueue = [];
  function startPolling() {
    clearInterval(S.pollTimer);
    clearInterval(S.refreshTimer);
    S.pollTimer = setInterval(pollRound, 2000);
    if (S.canAlerts) S.refreshTimer = setInterval(reloadAlerts, 10000); // others' acknowledgements
  }

  async function pollDevice(id) {
    const since = pollCursor.get(id) || new Date(Date.now() - 10 * 60e3).toISOString();
    const q = new URLSearchParams({ from: since, limit: "100" });
    try {
      const body = await api(`/v1/devices/${encodeURIComponent(id)}/positions?${q}`);
      const items = body.features.map((f) => ({
        device_id: id, kind: S.devices.get(id)?.kind, ts: f.properties.ts, lon: f.geometry.coordinates[0],
        lat: f.geometry.coordinates[1], speed: f.properties.speed, heading: f.properties.heading, port: null,
      }));
      items.sort((x, y) => (x.ts < y.ts ? -1 : 1));
      if (items.length) pollCursor.set(id, new Date(Date.parse(items[items.length - 1].ts) + 1).toISOString());
      ingestPositions(items);
    } catch (e) {
      if (e.status === 404) S.watch.delete(id);
    }
  }

  function pollSoon(id) {
    if (!S.caps || S.caps.stream) return;
    pollDevice(id);
  }

  async function pollRound() {
    if (!pollQueue.length) pollQueue = [...S.watch].slice(0, 200);
    const round = pollQueue.splice(0, 10);
    await Promise.all(round.map(pollDevice));
  }

  async function watchListedDevices() {
    if (!S.caps.devices) return;
    try {
      const body = await api("/v1/devices");
      const list = body.devices || body.items || [];
      for (const d of list.slice(0, 200)) {
        const id = d.device_id || d.id;
        if (!id) continue;
        S.watch.add(id);
        if (!S.devices.has(id) && d.kind) S.devices.set(id, { id, kind: d.kind, trail: [], proj: [], scale: null, ts: null });
        if (S.devices.get(id) && !S.devices.get(id).trail.length) S.devices.delete(id);
      }
      return list;
    } catch (e) {
      return [];
    }
  }

  // ---- trips, exports and custody reports (insurers) --------------------------------------------

  async function download(path, filename) {
    try {
      const r = await fetch(path, { headers: { Authorization: `Bearer ${S.token}` }, cache: "no-store", credentials: "omit" });
      if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
      const url = URL.createObjectURL(await r.blob());
      const a = el("a");
      a.href = url;
      a.download = filename;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      banner(`download: ${e.message}`);
    }
  }

  function link(text, onclick) {
    const a = el("a", null, text);
    a.href = "#";
    a.onclick = (e) => { e.preventDefault(); onclick(); };
    return a;
  }

  async function findTrips(query) {
    const list = $("trip-list");
    list.replaceChildren(el("div", "muted", "…"));
    const q = query.trim().toUpperCase() === query.trim() ? query.trim() : query.trim();
    try {
      const number = q.toUpperCase();
      if (isContainerNo(number) && (S.caps.containerTrips || S.caps.containerExport || S.caps.custody)) {
        list.replaceChildren(el("b", null, number));
        trackLayer.clearLayers();
        if (S.caps.containerExport) {
          // the container's fixes (its trackers', within the token's dates) as GeoJSON: drawn, and proof it is visible
          const base = S.caps.containerExport.replace(/\{[^}]+\}/, encodeURIComponent(number));
          const fc = await api(`${base}?format=geojson`);
          const line = (fc.features || []).filter((f) => f.geometry && f.geometry.type === "Point").map((f) => [f.geometry.coordinates[1], f.geometry.coordinates[0]]);
          list.replaceChildren(el("b", null, `${number}: ${line.length} fixes in the last 24 h`));
          if (line.length) {
            trackLayer.addLayer(L.polyline(line, { renderer: canvas, color: "#6a1b9a", weight: 3, opacity: 0.7 }));
            map.fitBounds(L.latLngBounds(line).pad(0.3), { maxZoom: 16 });
          }
          const exp = el("div", "exports", "export: ");
          for (const fmt of ["geojson", "gpx", "kml", "csv"]) exp.append(link(fmt.toUpperCase(), () => download(`${base}?format=${fmt}`, `${number}.${fmt}`)));
          list.append(exp);
        }
        if (S.caps.custody) {
          const base = S.caps.custody.replace(/\{[^}]+\}/, encodeURIComponent(number));
          const rep = el("div", "custody", "custody report: ");
          rep.append(link("HTML", () => download(`${base}?format=html`, `${number}-custody.html`)),
            link("PDF", () => download(`${base}?format=pdf`, `${number}-custody.pdf`)));
          list.append(rep);
        }
        if (S.caps.containerTrips) {
          const body = await api(S.caps.containerTrips.replace(/\{[^}]+\}/, encodeURIComponent(number)));
          const trips = body.trips || body.items || [];
          list.append(el("div", null, `${trips.length} trips`));
          for (const t of trips) list.append(tripRow(t));
        }
        return;
      }
      // a device (or a container tracker) by id: its positions, and the positions export on main
      const now = Date.now(), from = new Date(now - 24 * 3600e3).toISOString(), to = new Date(now).toISOString();
      trackLayer.clearLayers();
      const body = await drawTrack(q, from, to, "#6a1b9a");
      const feats = body.features;
      list.replaceChildren(el("b", null, `${q}: ${feats.length} fixes in the last 24 h`));
      if (feats.length) {
        const f = feats[feats.length - 1];
        ingestPositions([{ device_id: q, kind: isContainerNo(q) ? "container" : "truck", ts: f.properties.ts, lon: f.geometry.coordinates[0], lat: f.geometry.coordinates[1], heading: f.properties.heading, speed: f.properties.speed }]);
        S.watch.add(q);
        map.fitBounds(L.latLngBounds(feats.map((x) => [x.geometry.coordinates[1], x.geometry.coordinates[0]])).pad(0.3), { maxZoom: 16 });
      }
      const exp = el("div", null, "export (24 h): ");
      const range = `from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`;
      const base = S.caps.deviceExport
        ? `${S.caps.deviceExport.replace(/\{[^}]+\}/, encodeURIComponent(q))}?${range}`
        : `/v1/devices/${encodeURIComponent(q)}/positions?${range}`;
      const formats = S.caps.deviceExport ? ["geojson", "gpx", "kml", "csv"] : ["geojson", "gpx", "csv"];
      for (const fmt of formats) exp.append(link(fmt.toUpperCase(), () => download(`${base}&format=${fmt}`, `${q}.${fmt}`)));
      list.append(exp);
      if (S.caps.deviceTrips) {
        const tb = await api(S.caps.deviceTrips.replace(/\{[^}]+\}/, encodeURIComponent(q)));
        for (const t of tb.trips || tb.items || []) list.append(tripRow(t));
      }
    } catch (e) {
      list.replaceChildren(el("div", "err", e.status === 404 ? `${q}: not found (or not covered)` : e.message));
    }
  }

  function tripRow(t) {
    const id = t.id || t.trip_id;
    const box = el("div", "trip");
    box.append(el("div", null, `${fmtTs(t.start || t.started_at || t.start_ts)} → ${fmtTs(t.end || t.ended_at || t.end_ts) || "ongoing"}`));
    box.append(link("show on map", async () => {
      trackLayer.clearLayers();
      const full = S.caps.trip && id ? await api(S.caps.trip.replace(/\{[^}]+\}/, encodeURIComponent(id))) : t;
      openDetail(el("h3", null, `trip ${id || ""}`), tripSummary(full));
      drawTripPoints(full);
      const dev = full.device_id || t.device_id;
      const from = full.start || full.started_at || full.start_ts, to = full.end || full.ended_at || full.end_ts || new Date().toISOString();
      if (dev && from) await drawTrack(dev, from, to, "#6a1b9a").catch(() => {});
      const layers = trackLayer.getLayers().filter((l) => l.getBounds);
      if (layers.length) map.fitBounds(L.featureGroup(layers).getBounds().pad(0.2), { maxZoom: 16 });
    }));
    const formats = ["geojson", "gpx", "kml", "csv"];
    const dev = t.device_id, from = t.start || t.started_at || t.start_ts, to = t.end || t.ended_at || t.end_ts;
    if (S.caps.tripExport && id) {
      const base = S.caps.tripExport.replace(/\{[^}]+\}/, encodeURIComponent(id));
      for (const fmt of formats) box.append(link(fmt.toUpperCase(), () => download(`${base}?format=${fmt}`, `trip-${id}.${fmt}`)));
    } else if (S.caps.deviceExport && dev && from) {
      // no export of a trip as such: the export of its device over the trip's time
      const range = `from=${encodeURIComponent(from)}&to=${encodeURIComponent(to || new Date().toISOString())}`;
      const base = `${S.caps.deviceExport.replace(/\{[^}]+\}/, encodeURIComponent(dev))}?${range}`;
      for (const fmt of formats) box.append(link(fmt.toUpperCase(), () => download(`${base}&format=${fmt}`, `trip-${id || dev}.${fmt}`)));
    }
    return box;
  }

  $("trip-find").onsubmit = (e) => {
    e.preventDefault();
    const q = $("trip-query").value.trim();
    if (q) findTrips(q);
  };

  // ---- log-in ---------------------------------------------------------------------------------

  function showWho() {
    $("who").textContent = S.role ? `${S.role}${S.org ? " · " + S.org : ""}` : "";
  }

  function stop() {
    S.generation += 1;
    if (S.live) S.live.close();
    S.live = null;
    clearTimeout(S.retryTimer);
    clearInterval(S.pollTimer);
    clearInterval(S.refreshTimer);
  }

  async function start() {
    stop();
    S.role = null;
    S.org = null;
    S.alerts.clear();
    S.devices.clear();
    S.watch.clear();
    S.lastEventId = null;
    S.retry = 0;
    renderFeed();
    banner("");
    setStatus("connecting", "idle");
    try {
      await loadCaps();
      const notes = [];
      try {
        await loadFences();
      } catch (e) {
        if (e.status === 401) throw e;
        notes.push(`fences: ${e.message}`);
        legend();
      }
      try {
        await loadAlerts();
        S.canAlerts = true;
      } catch (e) {
        if (e.status === 401) throw e;
        S.canAlerts = false;
      }
      S.canWrite = S.canAlerts; // a role that may not write gets a 403 with its reason, shown under the buttons
      $("feed-box").hidden = !S.canAlerts;
      const listed = await watchListedDevices();
      $("trips-box").hidden = false; // a container's trips or a device's track and exports, for every role
      // a short list of what the token may see (an insurer's covered containers and trucks) to open
      const tl = $("trip-list");
      tl.replaceChildren();
      if (listed && listed.length && listed.length <= 100) {
        tl.append(el("div", "muted", "yours:"));
        for (const d of listed) {
          const id = d.container_no || d.device_id || d.id;
          if (!id) continue;
          const item = el("div");
          item.append(link(id, () => findTrips(id)));
          tl.append(item);
        }
      }
      showWho();
      if (notes.length) banner(notes.join("; "));
      $("logout").hidden = false;
      startLive();
    } catch (e) {
      setStatus(e.status === 401 ? "token refused" : `error: ${e.message}`, "error");
    }
  }

  $("login").onsubmit = (e) => {
    e.preventDefault();
    S.token = $("token").value.trim();
    if (!S.token) return;
    sessionStorage.setItem(TOKEN_KEY, S.token);
    try {
      S.audio = S.audio || new AudioContext(); // created on a click, so browsers let it play
      S.audio.resume();
    } catch (err) {
      S.audio = null;
    }
    start();
  };
  $("logout").onclick = () => {
    stop();
    sessionStorage.removeItem(TOKEN_KEY);
    S.token = "";
    $("token").value = "";
    S.alerts.clear();
    S.devices.clear();
    S.fenceById.clear();
    S.fenceGroups.clear();
    for (const layer of [fenceRoot, trackLayer, evidenceLayer, alertLayer]) layer.clearLayers();
    $("port").replaceChildren();
    $("trip-list").replaceChildren();
    $("detail").hidden = true;
    S.role = null;
    showWho();
    legend();
    renderFeed();
    scheduleFrame();
    $("logout").hidden = true;
    setStatus("not connected", "idle");
  };

  legend();
  updateLabels();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    S.token = saved;
    $("token").value = saved;
    start();
  }

  // For the browser tests and the frame-time benchmark: reads the page's state, feeds positions in
  // as the stream would. It reaches nothing the page's token could not already read.
  window.trackerDashboard = {
    ingestPositions,
    deviceIds: () => [...S.devices.keys()],
    device: (id) => {
      const d = S.devices.get(id);
      if (!d) return null;
      const box = $("map").getBoundingClientRect();
      return { kind: d.kind, ts: d.ts, trail: d.trail.length, heading: d.heading, x: box.left + d.sx, y: box.top + d.sy };
    },
    trackPoints: () => trackLayer.getLayers().reduce((n, l) => n + (l.getLatLngs ? l.getLatLngs().length : 0), 0),
    alertIds: () => [...S.alerts.keys()],
    alert: (id) => { const a = S.alerts.get(id); return a ? { status: a.status, severity: a.severity, kind: a.kind, device_id: a.device_id } : null; },
    alertDevices: () => [...new Set([...S.alerts.values()].map((a) => a.device_id))],
    alertMarkers: () => alertLayer.getLayers().length,
    evidenceLayers: () => evidenceLayer.getLayers().length,
    fenceCount: () => S.fenceById.size,
    frameWork: () => S.frameWork.slice(),
    cues: () => S.cues,
    live: () => (S.live ? S.live.kind : null),
    addAlerts: (list) => list.forEach((a) => upsert(a, false)),
    selectAlert,
    showDevice,
    viewContains: (lat, lon) => map.getBounds().contains([lat, lon]),
    map,
  };
})();
