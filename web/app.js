// Operator console: fleet map with clustering, vehicle list with search and status filters,
// a vehicle's track for a day or range (speed colours, direction arrows, playback), its trips
// and stops, alarms, tickets and fuel layers, fleet KPIs and the ingest health table.
// Plain browser JavaScript, no build step; Leaflet and Leaflet.markercluster from npm.
//
// Every value from the API (plates, driver names, cost centres, feed names, addresses...) is
// data, never markup: the DOM is built with createElement and textContent only, and Leaflet
// tooltips and icons get DOM elements (Leaflet reads a string as HTML).
(function () {
  "use strict";
  const REFRESH_MS = 15000;
  const COLORS = { moving: "#2e8540", idle: "#c77c02", parked: "#1f5fa8", offline: "#7a8794" };
  const STATUSES = Object.keys(COLORS);
  const FEED_STATUSES = ["ok", "stale", "failing", "never"];
  // Track speed classes (km/h, upper bound exclusive) → colour; the legend shows the same.
  const SPEED_CLASSES = [[10, "#1f5fa8", "< 10"], [40, "#2e8540", "10–40"],
                         [70, "#c77c02", "40–70"], [Infinity, "#c0392b", "≥ 70"]];
  const ARROWS = 24; // direction arrows along a track
  const ALARM_PAGE = 50;
  // The read-API's key header (dashboard/deps.py require_api_key). The key lives in this
  // tab's sessionStorage only and travels only in this header, never in a URL.
  const KEY_HEADER = "X-API-Key";
  const KEY_STORE = "dashboardApiKey";

  const params = new URLSearchParams(location.search);
  // A key in the address bar is ignored: it would stay in the history, server logs and
  // bookmarks. Take it out of the URL without reloading.
  if (params.has("key")) {
    params.delete("key");
    const query = params.toString();
    history.replaceState(history.state, "", location.pathname + (query ? "?" + query : "") + location.hash);
  }
  // Older versions of this page kept the key in localStorage (it outlived the tab).
  try { localStorage.removeItem(KEY_STORE); } catch (err) { /* storage disabled */ }

  function storedKey() {
    try { return sessionStorage.getItem(KEY_STORE); } catch (err) { return null; }
  }

  function keyHeaders(key = storedKey()) {
    return key ? { [KEY_HEADER]: key } : {};
  }

  // A 401. It remembers the key its request carried (null: none): a request sent before the
  // operator entered the key can answer after it, and that answer must neither drop the new
  // key nor ask for it again ("stale").
  class KeyNeeded extends Error {
    constructor(sentKey) {
      super(sentKey ? "the API refused the key" : "the API needs a key");
      this.sentKey = sentKey || null;
      this.refused = Boolean(sentKey);
    }

    get stale() {
      const key = storedKey();
      return key !== null && key !== this.sentKey;
    }
  }

  // fetch with the stored key in its header; a 401 throws KeyNeeded.
  async function fetchWithKey(url, init = {}) {
    const key = storedKey();
    const response = await fetch(url, { ...init, headers: { ...(init.headers || {}), ...keyHeaders(key) },
                                         credentials: "same-origin" });
    if (response.status === 401) throw new KeyNeeded(key);
    return response;
  }

  // An endpoint this API version does not have yet (404/405): the panel says "not available".
  class NotAvailable extends Error {}

  async function getJSON(url) {
    const response = await fetchWithKey(url);
    if (response.status === 404 || response.status === 405) {
      throw new NotAvailable(url.split("?")[0] + " is not available on this server");
    }
    if (!response.ok) {
      let detail = "";
      try { detail = (await response.json()).detail; } catch (err) { /* not JSON */ }
      throw new Error(typeof detail === "string" && detail ? detail
                      : url.split("?")[0] + " answered " + response.status);
    }
    return response.json();
  }

  // ── Small helpers: text only ──────────────────────────────────────────────────────────
  function el(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  function text(value) {
    return value === null || value === undefined || value === "" ? "–" : String(value);
  }

  function num(value, digits) {
    const n = Number(value);
    return value === null || value === undefined || !Number.isFinite(n) ? "–" : n.toFixed(digits);
  }

  function ago(iso) {
    if (!iso) return "never";
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (!Number.isFinite(s)) return "–";
    if (s < 90) return s + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function duration(seconds) {
    const s = Number(seconds);
    if (!Number.isFinite(s)) return "–";
    const minutes = Math.round(s / 60);
    if (minutes < 60) return minutes + " min";
    return Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0");
  }

  // All times in East Africa Time, with the zone written.
  const EAT = "Africa/Nairobi";
  const timeFmt = new Intl.DateTimeFormat("en-GB", { timeZone: EAT, hour: "2-digit", minute: "2-digit" });
  const dayFmt = new Intl.DateTimeFormat("en-GB", { timeZone: EAT, day: "numeric", month: "short" });
  const isoDayFmt = new Intl.DateTimeFormat("en-CA", { timeZone: EAT, year: "numeric", month: "2-digit", day: "2-digit" });

  function eatTime(iso, withDay) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "–";
    return (withDay ? dayFmt.format(d) + " " : "") + timeFmt.format(d) + " EAT";
  }

  function eatDay(date) { return isoDayFmt.format(date); } // YYYY-MM-DD of the EAT day

  function isoNoMs(date) { return date.toISOString().replace(/\.\d{3}Z$/, "+00:00"); }

  // The API's plate rule (reporting.normalize_plate): letters and digits, upper case.
  function norm(value) {
    return value === null || value === undefined ? "" : String(value).replace(/[^0-9A-Za-z]/g, "").toUpperCase();
  }

  function show(node, visible) { node.hidden = !visible; }

  const $ = (id) => document.getElementById(id);

  // ── The API key form (shown when the API answers 401) ─────────────────────────────────
  const keyForm = $("key-form");
  const keyInput = $("key-input");
  const keyMessage = $("key-message");

  function askForKey(needed) {
    if (needed.stale) return; // answered a request sent before the key now stored: not about it
    const refused = needed.refused;
    if (refused) {
      try { sessionStorage.removeItem(KEY_STORE); } catch (err) { /* storage disabled */ }
    } else if (!keyForm.hidden) {
      return; // already asking: keep the message (it may say the last key was refused)
    }
    keyMessage.textContent = refused ? "The API refused that key. Enter a valid key:"
                                     : "The API needs a key. Enter it once for this tab:";
    const wasHidden = keyForm.hidden;
    keyForm.hidden = false;
    document.body.dataset.needsKey = "1";
    if (wasHidden) keyInput.focus();
  }

  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = keyInput.value.trim();
    if (!key) return;
    try {
      sessionStorage.setItem(KEY_STORE, key);
    } catch (err) {
      keyMessage.textContent = "This browser does not allow session storage: the key cannot be kept.";
      return;
    }
    keyInput.value = "";
    keyForm.hidden = true;
    document.body.dataset.needsKey = "0";
    if (!live.source) openStream();
    enableFleetTiles();
    tick();
  });

  // A panel's failure: the key form, "not available", or the error's sentence.
  function failed(node, err, what) {
    if (err instanceof KeyNeeded) askForKey(err);
    node.textContent = err instanceof NotAvailable ? what + ": not available on this server"
                                                   : what + " unavailable: " + err.message;
  }

  // ── The map ───────────────────────────────────────────────────────────────────────────
  const map = L.map("map", { preferCanvas: false, maxZoom: 19 }).setView([-1.8, 36.5], 6);
  // Panes, bottom to top: offline basemap (under the tiles: seen only when they are off or
  // fail), tiles, track paths, city labels, arrows, selection ring, vehicles, playback marker;
  // cluster icons and the track's start/end stay in Leaflet's own panes above/below.
  const panes = [["basemap", 150], ["labels", 410], ["arrows", 420], ["highlight", 440], ["fleet", 445], ["vehicles", 450],
                 ["playback", 460]];
  for (const [name, z] of panes) map.createPane(name).style.zIndex = String(z);
  map.getPane("labels").style.pointerEvents = "none";
  map.getPane("arrows").style.pointerEvents = "none";
  map.getPane("highlight").style.pointerEvents = "none";
  map.getPane("playback").style.pointerEvents = "none";
  map.getPane("fleet").style.pointerEvents = "none";

  const tilesNote = L.control({ position: "topright" });
  tilesNote.onAdd = function () {
    const div = L.DomUtil.create("div", "tiles-note");
    div.id = "tiles-note";
    div.textContent = "basemap tiles off — offline outline map";
    return div;
  };

  const tileMeta = document.querySelector('meta[name="tile-url"]');
  const tileUrl = tileMeta ? tileMeta.content : "";
  const tilesWanted = params.get("tiles") !== "off" && /^https?:\/\//.test(tileUrl);
  if (tilesWanted) {
    // Its origin is allowed in the page's CSP img-src (dashboard/operator.py, DASHBOARD_TILE_URL).
    const tiles = L.tileLayer(tileUrl, {
      maxZoom: 19,
      attribution: tileUrl.includes("openstreetmap.org") ? "© OpenStreetMap contributors" : "",
    }).addTo(map);
    let loaded = 0;
    let errors = 0;
    tiles.on("tileload", () => { loaded += 1; });
    tiles.on("tileerror", () => {
      errors += 1;
      if (errors >= 4 && loaded === 0 && !tilesNote._map) {
        tilesNote.addTo(map);
        document.body.dataset.tiles = "off";
      }
    });
    document.body.dataset.tiles = "on";
  } else {
    tilesNote.addTo(map);
    document.body.dataset.tiles = "off";
  }

  // The offline basemap (web/basemap.geojson, scripts/make_basemap.py): always under the tiles.
  const BASEMAP_STYLE = {
    water: { color: "#8fb3d1", weight: 1, fillColor: "#b9d3e8", fillOpacity: 1 },
    city: { color: "#b9a77c", weight: 1, fillColor: "#f6eed6", fillOpacity: 1 },
    road: { color: "#a05a2c", weight: 2, opacity: 0.7 },
  };
  fetch("/static/app/basemap.geojson", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error("basemap " + r.status))))
    .then((geo) => {
      L.geoJSON(geo, {
        pane: "basemap", interactive: false,
        style: (f) => BASEMAP_STYLE[(f.properties || {}).kind] || BASEMAP_STYLE.road,
      }).addTo(map);
      document.body.dataset.basemap = String((geo.features || []).length);
    })
    .catch(() => { document.body.dataset.basemap = "0"; });

  const legend = L.control({ position: "bottomleft" });
  legend.onAdd = function () {
    const div = L.DomUtil.create("div", "legend");
    for (const [status, color] of Object.entries(COLORS)) {
      const swatch = el("i");
      swatch.style.background = color; // CSSOM: allowed by the CSP, unlike a style="" attribute
      div.append(swatch, status);
    }
    return div;
  };
  legend.addTo(map);

  // City labels keep the map readable when no internet tiles load.
  const CITIES = [["Nairobi", -1.2864, 36.8172], ["Mombasa", -4.0435, 39.6682], ["Kampala", 0.3476, 32.5825]];
  for (const [name, lat, lng] of CITIES) {
    const icon = L.divIcon({ className: "city-label", html: el("span", null, name) });
    L.marker([lat, lng], { interactive: false, icon, pane: "labels" }).addTo(map);
  }

  // Vehicles cluster with their count; zoomed in far enough, every vehicle is its own marker.
  // No animation: the markers are circle markers (SVG paths), which the animations don't move.
  // Without the plugin (not installed) the vehicles are plain markers rather than no map.
  const cluster = typeof L.markerClusterGroup !== "function" ? plainGroup() : L.markerClusterGroup({
    animate: false, showCoverageOnHover: false, maxClusterRadius: 45, disableClusteringAtZoom: 13,
    iconCreateFunction: (c) => {
      const n = c.getChildCount();
      const size = n < 10 ? "small" : n < 50 ? "medium" : "large";
      const inner = el("div");
      inner.append(el("span", "cluster-count", String(n)));
      return L.divIcon({ html: inner, className: "marker-cluster marker-cluster-" + size + " vehicle-cluster",
                         iconSize: L.point(40, 40) });
    },
  }).addTo(map);
  function plainGroup() {
    const group = L.layerGroup().addTo(map);
    group.addLayers = (layers) => { for (const layer of layers) group.addLayer(layer); return group; };
    return group;
  }
  const highlightLayer = L.layerGroup().addTo(map);
  const trackLayer = L.layerGroup().addTo(map);
  const focusLayer = L.layerGroup().addTo(map); // the clicked trip / stop / alarm
  const playbackLayer = L.layerGroup().addTo(map);
  const ticketsLayer = L.layerGroup();
  const fuelLayer = L.layerGroup();

  const state = {
    vehicles: [],        // [{p, lat, lng, label, marker}]
    selected: null,      // imei of the selected vehicle
    track: null,         // {latlngs, times, speeds}
    trips: [],
    alarmsCursor: null,
    alarmsPaged: false,
    fitted: false,
    selectHandled: false,
  };

  function tooltipContent(label, p) {
    const div = el("div", "vehicle-tooltip");
    div.append(el("b", null, label), ` · ${text(p.status)} · ${text(p.speed_kmh)} km/h`);
    return div;
  }

  function statusOf(p) { return STATUSES.includes(p.status) ? p.status : "offline"; }

  function wantedStatuses() {
    return new Set([...document.querySelectorAll("#status-filters input:checked")].map((i) => i.value));
  }

  function matches(v, query) {
    if (!query) return true;
    const q = norm(query);
    const lower = query.trim().toLowerCase();
    return (q && (norm(v.p.vehicle_number).includes(q) || norm(v.p.imei).includes(q) ||
                  norm(v.p.vehicle_name).includes(q))) ||
           (lower && String(v.p.driver_name || "").toLowerCase().includes(lower));
  }

  function visibleVehicles() {
    const statuses = wantedStatuses();
    const query = $("search").value;
    return state.vehicles.filter((v) => statuses.has(statusOf(v.p)) && matches(v, query));
  }

  // The map and the list show the vehicles that pass the search and the status filters.
  function renderVehicles() {
    const shown = visibleVehicles();
    cluster.clearLayers();
    // At low zoom the vehicle tiles draw the fleet: only the selected vehicle keeps its marker.
    const low = lowZoom();
    cluster.addLayers(shown.filter((v) => !low || v.p.imei === state.selected).map((v) => v.marker));
    fleetTiles.visible = state.vehicles.length ? new Set(shown.map((v) => String(v.p.imei))) : null;
    repaintFleetTiles();
    $("vehicle-count").textContent = `${shown.length} of ${state.vehicles.length}`;
    document.body.dataset.listed = String(shown.length);
    // Rebuild the list only when it changes (a refresh would otherwise take the focus away).
    const signature = JSON.stringify([state.selected, shown.map((v) => [v.p.imei, v.label, v.p.status,
                                                                       v.p.speed_kmh, v.p.driver_name])]);
    if (signature === state.listSignature) return;
    state.listSignature = signature;
    const items = shown.map((v) => {
      const li = el("li", "vehicle-row" + (v.p.imei === state.selected ? " selected" : ""));
      li.tabIndex = 0;
      li.dataset.imei = String(v.p.imei || "");
      const dot = el("i", "dot");
      dot.style.background = COLORS[statusOf(v.p)];
      li.append(dot, el("b", "plate", v.label), " ",
                el("span", "muted", `${text(v.p.driver_name)} · ${statusOf(v.p)} · ${text(v.p.speed_kmh)} km/h`));
      // The row may outlive this refresh: select the vehicle's latest position.
      const pick = () => selectVehicle(state.vehicles.find((x) => x.p.imei === v.p.imei) || v, true);
      li.addEventListener("click", pick);
      li.addEventListener("keydown", (e) => { if (e.key === "Enter") pick(); });
      return li;
    });
    $("vehicle-list").replaceChildren(...items);
  }

  $("search").addEventListener("input", renderVehicles);
  $("status-filters").addEventListener("change", renderVehicles);

  function findVehicle(spelling) {
    const key = norm(spelling);
    if (!key) return null;
    return state.vehicles.find((v) => norm(v.p.vehicle_number) === key || norm(v.p.imei) === key) ||
           state.vehicles.find((v) => norm(v.p.vehicle_name) === key) || null;
  }

  // A vehicle from a Feature of /webhook/live-positions (or the stream); null without a point.
  function vehicleFrom(f) {
    if (!f || !f.geometry || f.geometry.type !== "Point") return null;
    const [lng, lat] = f.geometry.coordinates;
    const p = f.properties || {};
    const label = text(p.vehicle_number || p.vehicle_name || p.imei);
    const marker = L.circleMarker([lat, lng], {
      radius: 7, weight: 2, color: "#fff", fillOpacity: 0.9, pane: "vehicles",
      fillColor: COLORS[statusOf(p)], className: "vehicle-marker",
    });
    const v = { p, lat, lng, label, marker };
    marker.bindTooltip(tooltipContent(label, p));
    marker.on("click", () => selectVehicle(v, false));
    // The IMEI on the marker's SVG path (a DOM attribute, never markup): tests and tools find it.
    marker.on("add", () => { const path = marker.getElement(); if (path) path.dataset.imei = String(p.imei || ""); });
    return v;
  }

  function showSummary(s) {
    $("summary").textContent =
      `${state.vehicles.length} vehicles — ${text(s.moving)} moving, ${text(s.idle)} idle, ` +
      `${text(s.parked)} parked, ${text(s.offline)} offline`;
    $("updated").textContent = "updated " + timeFmt.format(new Date()) + " EAT";
    document.body.dataset.vehicles = String(state.vehicles.length);
  }

  // The whole fleet: a poll of /webhook/live-positions or the stream's `snapshot`.
  async function applyCollection(fc) {
    const vehicles = [];
    for (const f of fc.features || []) {
      const v = vehicleFrom(f);
      if (v) vehicles.push(v);
    }
    state.vehicles = vehicles;
    renderVehicles();
    fleetChanged();
    showSummary(fc.summary || {});
    const current = state.selected && vehicles.find((v) => v.p.imei === state.selected);
    if (current) drawHighlight(current);
    if (!state.fitted && vehicles.length) {
      map.fitBounds(vehicles.map((v) => [v.lat, v.lng]), { padding: [30, 30], maxZoom: 14, animate: false });
      state.fitted = true;
    }
    if (!state.selectHandled && vehicles.length) {
      state.selectHandled = true;
      // `?select=<plate in any spelling, or IMEI>` opens that vehicle (links from other tools).
      const wanted = params.get("select");
      if (wanted) {
        const hit = findVehicle(wanted);
        const message = $("select-message");
        if (hit) {
          show(message, false);
          await selectVehicle(hit, false); // the track, when there is one, sets the view
        } else {
          message.textContent = `No vehicle matches “${wanted}” (from the link's ?select=).`;
          show(message, true);
          document.body.dataset.selectMissing = "1";
        }
      }
    }
  }

  async function refreshPositions() {
    await applyCollection(await getJSON("/webhook/live-positions"));
  }

  // One vehicle's new state from the stream (`position`): its marker moves, the list and the
  // counts follow (rendered at most once per RENDER_MS however many events arrive).
  function applyPosition(f) {
    const fresh = vehicleFrom(f);
    if (!fresh) return;
    const v = state.vehicles.find((x) => x.p.imei === fresh.p.imei);
    if (!v) {
      state.vehicles.push(fresh);
    } else {
      // Moved in place; the next render (clearLayers + addLayers) re-clusters it.
      v.p = fresh.p;
      v.lat = fresh.lat;
      v.lng = fresh.lng;
      v.label = fresh.label;
      v.marker.setLatLng([v.lat, v.lng]);
      v.marker.setStyle({ fillColor: COLORS[statusOf(v.p)] });
      v.marker.setTooltipContent(tooltipContent(v.label, v.p));
      const path = v.marker.getElement();
      if (path) path.dataset.imei = String(v.p.imei || "");
    }
    if (fresh.p.imei === state.selected) drawHighlight(v || fresh);
    scheduleRender();
  }

  // A vehicle left the stream's filter or the map (`remove`).
  function applyRemove(id) {
    const v = state.vehicles.find((x) => String(x.p.imei) === String(id));
    if (!v) return;
    state.vehicles = state.vehicles.filter((x) => x !== v);
    if (v.p.imei === state.selected) highlightLayer.clearLayers();
    scheduleRender();
  }

  const RENDER_MS = 1000;
  let renderTimer = null;
  function scheduleRender() {
    if (renderTimer !== null) return;
    renderTimer = setTimeout(() => {
      renderTimer = null;
      renderVehicles();
      fleetChanged();
      const counts = { moving: 0, idle: 0, parked: 0, offline: 0 };
      for (const v of state.vehicles) counts[statusOf(v.p)] += 1;
      showSummary(counts);
    }, RENDER_MS);
  }

  function drawHighlight(v) {
    highlightLayer.clearLayers();
    L.circleMarker([v.lat, v.lng], {
      radius: 14, weight: 4, color: "#e63946", fill: false, pane: "highlight",
      interactive: false, className: "selected-ring",
    }).addTo(highlightLayer);
  }

  // ── The selected vehicle: details, track, trips, stops ───────────────────────────────
  function rangeQuery() {
    const start = $("range-start").value;
    const end = $("range-end").value || start;
    if (start) return { start, end, label: start === end ? start : `${start} – ${end}`, dates: true };
    const now = new Date();
    return { start: isoNoMs(new Date(now.getTime() - 864e5)), end: isoNoMs(now), label: "last 24 h", dates: false };
  }

  async function selectVehicle(v, zoom) {
    state.selected = v.p.imei;
    const p = v.p;
    const box = $("vehicle");
    const title = el("div", "vehicle-title");
    title.append(el("b", "vehicle-label", v.label));
    if (p.vehicle_name && p.vehicle_name !== v.label) title.append(" ", el("span", "vehicle-name", p.vehicle_name));
    const who = el("div", "vehicle-who");
    who.append(el("span", "driver", text(p.driver_name)), " · ", el("span", "cost-centre", text(p.cost_centre)),
               " · ", el("span", "imei muted", "IMEI " + text(p.imei)));
    const stateLine = el("div", "vehicle-state",
                         `status ${statusOf(p)}, ${text(p.speed_kmh)} km/h, fix ${eatTime(p.gps_time, true)} (${ago(p.gps_time)})`);
    box.replaceChildren(title, who, stateLine);
    show($("range-form"), true);
    drawHighlight(v);
    renderVehicles();
    if (zoom) map.setView([v.lat, v.lng], Math.max(map.getZoom(), 13), { animate: false });
    // On a phone the list is below the map: bring the map back into view.
    if (zoom && document.body.classList.contains("narrow")) $("map").scrollIntoView({ block: "start" });
    await loadSelection();
  }

  async function loadSelection() {
    const v = state.vehicles.find((x) => x.p.imei === state.selected);
    if (!v) return;
    const range = rangeQuery();
    await Promise.allSettled([loadTrack(v, range), loadTrips(v, range), loadStops(v, range)]);
  }

  $("range-form").addEventListener("submit", (e) => { e.preventDefault(); loadSelection(); });
  $("range-last24").addEventListener("click", () => {
    $("range-start").value = "";
    $("range-end").value = "";
    loadSelection();
  });

  function speedColor(kmh) {
    const s = Number(kmh) || 0;
    return SPEED_CLASSES.find(([upper]) => s < upper)[1];
  }

  function bearing(a, b) {
    const dy = b[0] - a[0];
    const dx = (b[1] - a[1]) * Math.cos((a[0] * Math.PI) / 180);
    return (Math.atan2(dx, dy) * 180) / Math.PI; // 0 = north, clockwise
  }

  // The track for the chosen day/range (start/end), or the last 24 h (`hours`). An API that
  // does not know start/end yet answers its default 24 h: then the page asks with `hours`.
  async function fetchTrack(v, range) {
    const base = "/webhook/live-positions/track?vehicle_number=" + encodeURIComponent(v.p.imei || v.label);
    if (!range.dates) return { fc: await getJSON(base + "&hours=24"), note: "" };
    const fc = await getJSON(`${base}&start=${encodeURIComponent(range.start)}&end=${encodeURIComponent(range.end)}`);
    const s = fc.summary || {};
    if (s.start === undefined || String(s.start).slice(0, 10) === range.start ||
        Math.abs(new Date(s.start) - new Date(range.start + "T00:00:00+03:00")) < 3600e3) {
      return { fc, note: "" };
    }
    const hours = Math.min(168, Math.max(1, Math.ceil((Date.now() - new Date(range.start + "T00:00:00+03:00")) / 3600e3)));
    return { fc: await getJSON(`${base}&hours=${hours}`), note: ` (this API only knows "last N hours": last ${hours} h)` };
  }

  async function loadTrack(v, range) {
    const info = $("track-info");
    info.textContent = "fetching the track…";
    trackLayer.clearLayers();
    playbackLayer.clearLayers();
    focusLayer.clearLayers();
    show($("playback"), false);
    show($("speed-legend"), false);
    stopPlayback();
    state.track = null;
    try {
      const { fc, note } = await fetchTrack(v, range);
      if (state.selected !== v.p.imei) return;
      const line = (fc.features || []).find((f) => f.geometry && f.geometry.type === "LineString");
      if (!line) {
        info.textContent = `no track for ${range.label}${note}`;
        document.body.dataset.trackPoints = "0";
        return;
      }
      const lp = line.properties || {};
      const latlngs = line.geometry.coordinates.map(([lng, lat]) => [lat, lng]);
      const times = Array.isArray(lp.times) ? lp.times : [];
      const speeds = Array.isArray(lp.speeds_kmh) ? lp.speeds_kmh : [];
      state.track = { latlngs, times, speeds };
      drawTrack(latlngs, speeds);
      drawEnds(fc, latlngs, times);
      map.fitBounds(L.latLngBounds(latlngs), { padding: [40, 40], maxZoom: 15, animate: false });
      info.textContent = `${range.label}: ${text(lp.distance_km)} km, max ${text(lp.max_speed_kmh)} km/h, ` +
        `${latlngs.length} points, ${eatTime(times[0], true)} → ${eatTime(times[times.length - 1], true)}${note}`;
      setupPlayback(latlngs, times, speeds);
      document.body.dataset.trackPoints = String(latlngs.length);
    } catch (err) {
      failed(info, err, "track");
      document.body.dataset.trackPoints = "0";
    }
  }

  // Speed colouring: consecutive segments of one speed class make one polyline.
  function drawTrack(latlngs, speeds) {
    let run = [latlngs[0]];
    let color = speedColor(speeds[1]);
    const flush = () => {
      if (run.length > 1) L.polyline(run, { color, weight: 4, opacity: 0.9, className: "vehicle-track" }).addTo(trackLayer);
    };
    for (let i = 1; i < latlngs.length; i++) {
      const c = speedColor(speeds[i]);
      if (c !== color) {
        flush();
        run = [latlngs[i - 1]];
        color = c;
      }
      run.push(latlngs[i]);
    }
    flush();
    if (latlngs.length === 1) L.circleMarker(latlngs[0], { radius: 4, className: "vehicle-track" }).addTo(trackLayer);
    // Direction: arrows spread evenly along the fixes.
    const step = Math.max(1, Math.floor(latlngs.length / ARROWS));
    for (let i = Math.floor(step / 2); i < latlngs.length - 1; i += step) {
      const a = latlngs[i];
      const b = latlngs.slice(i + 1).find((x) => x[0] !== a[0] || x[1] !== a[1]);
      if (!b) continue;
      const arrow = el("span", "arrow-glyph", "▲");
      arrow.style.transform = `rotate(${bearing(a, b).toFixed(0)}deg)`;
      L.marker(a, { pane: "arrows", interactive: false, keyboard: false,
                    icon: L.divIcon({ className: "track-arrow", html: arrow, iconSize: [14, 14] }) }).addTo(trackLayer);
    }
    const legendBox = $("speed-legend");
    legendBox.replaceChildren(el("span", null, "km/h:"));
    for (const [, c, label] of SPEED_CLASSES) {
      const swatch = el("i");
      swatch.style.background = c;
      legendBox.append(swatch, label);
    }
    show(legendBox, true);
  }

  function drawEnds(fc, latlngs, times) {
    const ends = [["start", latlngs[0], times[0], "#2e8540"], ["end", latlngs[latlngs.length - 1], times[times.length - 1], "#c0392b"]];
    for (const [role, at, time, color] of ends) {
      const f = (fc.features || []).find((x) => x.properties && x.properties.role === role && x.geometry);
      const pos = f ? [f.geometry.coordinates[1], f.geometry.coordinates[0]] : at;
      const m = L.circleMarker(pos, { radius: 8, weight: 3, color: "#fff", fillColor: color, fillOpacity: 1,
                                      className: "track-" + role });
      m.bindTooltip(el("span", null, `${role} ${eatTime((f && f.properties.gps_time) || time, true)}`));
      m.addTo(trackLayer);
    }
  }

  // ── Playback: a marker moved along the fixes by the slider (or ▶) ────────────────────
  let playTimer = null;
  const slider = $("playback-slider");

  function setupPlayback(latlngs, times, speeds) {
    slider.max = String(latlngs.length - 1);
    slider.value = "0";
    playbackLayer.clearLayers();
    state.playbackMarker = L.circleMarker(latlngs[0], {
      radius: 9, weight: 3, color: "#111", fillColor: "#ffd400", fillOpacity: 1, pane: "playback",
      interactive: false, className: "playback-marker",
    }).addTo(playbackLayer);
    show($("playback"), latlngs.length > 1);
    moveTo(0);
  }

  function moveTo(i) {
    const t = state.track;
    if (!t || !state.playbackMarker) return;
    const at = t.latlngs[Math.min(i, t.latlngs.length - 1)];
    state.playbackMarker.setLatLng(at);
    $("playback-time").textContent = `${eatTime(t.times[i], true)} · ${text(t.speeds[i])} km/h`;
    document.body.dataset.playbackIndex = String(i);
    document.body.dataset.playbackAt = at.join(",");
  }

  slider.addEventListener("input", () => moveTo(Number(slider.value)));

  function stopPlayback() {
    if (playTimer) clearInterval(playTimer);
    playTimer = null;
    $("play-button").textContent = "▶ Play";
  }

  $("play-button").addEventListener("click", () => {
    if (playTimer) { stopPlayback(); return; }
    const max = Number(slider.max);
    if (Number(slider.value) >= max) slider.value = "0";
    const step = Math.max(1, Math.round(max / 300)); // about 30 s for a whole track
    $("play-button").textContent = "❚❚ Pause";
    playTimer = setInterval(() => {
      const next = Math.min(max, Number(slider.value) + step);
      slider.value = String(next);
      moveTo(next);
      if (next >= max) stopPlayback();
    }, 100);
  });

  // ── Trips and stops of the selected vehicle ───────────────────────────────────────────
  function csvLink(a, path, query, filename) {
    a.href = `${path}?${query}&format=csv`;
    a.download = filename;
    show(a, true);
  }

  function listQuery(v, range) {
    return `vehicle_number=${encodeURIComponent(v.p.imei || v.label)}&start=${encodeURIComponent(range.start)}` +
           `&end=${encodeURIComponent(range.end)}`;
  }

  async function loadTrips(v, range) {
    const list = $("trips");
    list.replaceChildren(el("li", "muted", "fetching trips…"));
    const query = listQuery(v, range);
    csvLink($("trips-csv"), "/analytics/trips", query, "trips.csv");
    try {
      const data = await getJSON(`/analytics/trips?${query}&limit=500`);
      if (state.selected !== v.p.imei) return;
      state.trips = data.items || [];
      const rows = state.trips.map((t) => {
        const li = el("li", "trip-row");
        li.dataset.tripId = String(t.trip_id);
        li.tabIndex = 0;
        li.append(el("b", null, `${eatTime(t.start_time, true)} → ${eatTime(t.end_time)}`),
                  el("span", "muted", ` · ${num(t.distance_km, 1)} km · ${duration(t.duration_s)}` +
                     (t.max_speed_kmh === null || t.max_speed_kmh === undefined ? "" : ` · max ${t.max_speed_kmh} km/h`)));
        li.addEventListener("click", () => focusTrip(t, li));
        li.addEventListener("keydown", (e) => { if (e.key === "Enter") focusTrip(t, li); });
        return li;
      });
      if (data.next_cursor) rows.push(el("li", "muted", "more trips in this range: narrow it, or use the CSV"));
      list.replaceChildren(...(rows.length ? rows : [el("li", "muted", `no trips for ${range.label}`)]));
      document.body.dataset.trips = String(state.trips.length);
    } catch (err) {
      const li = el("li", "muted");
      failed(li, err, "trips");
      list.replaceChildren(li);
      if (err instanceof NotAvailable) show($("trips-csv"), false);
    }
  }

  function markActive(li) {
    for (const other of document.querySelectorAll("#trips li, #stops li, #alarms li")) other.classList.remove("active");
    if (li) li.classList.add("active");
  }

  // A trip along the track's own fixes between its start and end; the straight chord (dashed)
  // only where the track does not cover it.
  function focusTrip(t, li) {
    markActive(li);
    focusLayer.clearLayers();
    const start = new Date(t.start_time).getTime();
    const end = t.end_time ? new Date(t.end_time).getTime() : start;
    const track = state.track;
    let along = [];
    if (track && track.times.length === track.latlngs.length) {
      along = track.latlngs.filter((_, i) => {
        const ms = new Date(track.times[i]).getTime();
        return ms >= start && ms <= end;
      });
    }
    let layer;
    if (along.length > 1) {
      layer = L.polyline(along, { color: "#6f2dbd", weight: 7, opacity: 0.8, className: "trip-path" });
      document.body.dataset.tripDrawn = "track";
    } else if ([t.start_lat, t.start_lng, t.end_lat, t.end_lng].every((x) => Number.isFinite(Number(x)) && x !== null)) {
      layer = L.polyline([[t.start_lat, t.start_lng], [t.end_lat, t.end_lng]],
                         { color: "#6f2dbd", weight: 4, dashArray: "8 8", className: "trip-chord" });
      document.body.dataset.tripDrawn = "chord";
    }
    if (layer) {
      layer.addTo(focusLayer);
      map.fitBounds(layer.getBounds(), { padding: [40, 40], maxZoom: 16, animate: false });
    }
  }

  async function loadStops(v, range) {
    const list = $("stops");
    list.replaceChildren(el("li", "muted", "fetching stops…"));
    const query = listQuery(v, range);
    csvLink($("stops-csv"), "/analytics/stops", query, "stops.csv");
    try {
      const data = await getJSON(`/analytics/stops?${query}&limit=500`);
      if (state.selected !== v.p.imei) return;
      const items = data.items || [];
      const rows = items.map((s) => {
        const li = el("li", "stop-row");
        li.tabIndex = 0;
        li.append(el("b", null, `${eatTime(s.start_time, true)} → ${eatTime(s.end_time)}`),
                  el("span", "muted", ` · ${duration(s.duration_s)}${s.kind ? " " + s.kind : ""} · ${text(s.address)}`));
        const go = () => {
          markActive(li);
          focusLayer.clearLayers();
          if (s.lat === null || s.lat === undefined || s.lng === null || s.lng === undefined) return;
          L.circleMarker([s.lat, s.lng], { radius: 11, weight: 3, color: "#6f2dbd", fillOpacity: 0.3, className: "stop-focus" })
            .addTo(focusLayer);
          map.setView([s.lat, s.lng], Math.max(map.getZoom(), 15), { animate: false });
        };
        li.addEventListener("click", go);
        li.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
        return li;
      });
      if (data.next_cursor) rows.push(el("li", "muted", "more stops in this range: narrow it, or use the CSV"));
      list.replaceChildren(...(rows.length ? rows : [el("li", "muted", `no stops for ${range.label}`)]));
      document.body.dataset.stops = String(items.length);
    } catch (err) {
      const li = el("li", "muted");
      failed(li, err, "stops");
      list.replaceChildren(li);
      if (err instanceof NotAvailable) show($("stops-csv"), false);
    }
  }

  // ── CSV exports: plain links; with a key the file is fetched with the header instead ──
  async function downloadWithKey(a) {
    const response = await fetchWithKey(a.href, { headers: { Accept: "text/csv" } });
    if (!response.ok) throw new Error("export answered " + response.status);
    const disposition = response.headers.get("content-disposition") || "";
    const name = (/filename="([^"]+)"/.exec(disposition) || [])[1] || a.download || "export.csv";
    const url = URL.createObjectURL(await response.blob());
    const save = el("a");
    save.href = url;
    save.download = name;
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  for (const a of document.querySelectorAll("a.csv")) {
    a.addEventListener("click", (event) => {
      if (!storedKey()) return; // no key: the browser downloads the link itself
      event.preventDefault();
      downloadWithKey(a).catch((err) => {
        if (err instanceof KeyNeeded) askForKey(err);
        $("updated").textContent = "error: " + err.message;
      });
    });
  }

  // ── Alarms (last 24 h, newest first, paged with next_cursor) ─────────────────────────
  function alarmRow(a) {
    const li = el("li", "alarm-row");
    li.dataset.alarmId = String(a.alarm_id);
    const sev = ["critical", "high", "medium", "low", "info"].includes(a.severity) ? a.severity : "none";
    li.append(el("span", "sev sev-" + sev, text(a.severity)), " ",
              el("b", null, text(a.vehicle_number || a.imei)), " ",
              el("span", null, text(a.alarm_name || a.alarm_type)), " ",
              el("span", "muted", eatTime(a.alarm_time, true)));
    if (a.address) li.append(el("div", "muted", a.address));
    li.tabIndex = 0;
    const go = () => {
      markActive(li);
      focusLayer.clearLayers();
      if (a.lat === null || a.lat === undefined || a.lng === null || a.lng === undefined) return;
      const m = L.circleMarker([a.lat, a.lng], { radius: 11, weight: 3, color: "#c0392b", fillOpacity: 0.3, className: "alarm-focus" });
      m.bindTooltip(el("span", null, `${text(a.alarm_name || a.alarm_type)} · ${eatTime(a.alarm_time, true)}`));
      m.addTo(focusLayer);
      map.setView([a.lat, a.lng], Math.max(map.getZoom(), 14), { animate: false });
    };
    li.addEventListener("click", go);
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
    return li;
  }

  async function loadAlarms(more) {
    const list = $("alarms");
    const url = `/analytics/alarms?limit=${ALARM_PAGE}` +
                (more && state.alarmsCursor ? "&cursor=" + encodeURIComponent(state.alarmsCursor) : "");
    try {
      const data = await getJSON(url);
      const rows = (data.items || []).map(alarmRow);
      if (more) list.append(...rows);
      else list.replaceChildren(...(rows.length ? rows : [el("li", "muted", "no alarms in the last 24 h")]));
      state.alarmsCursor = data.next_cursor || null;
      state.alarmsPaged = Boolean(more);
      show($("alarms-more"), Boolean(state.alarmsCursor));
      document.body.dataset.alarms = String(list.querySelectorAll(".alarm-row").length);
    } catch (err) {
      const li = el("li", "muted");
      failed(li, err, "alarms");
      if (!more) list.replaceChildren(li);
      else list.append(li);
      if (err instanceof NotAvailable) {
        show($("alarms-csv"), false);
        document.body.dataset.alarms = "n/a";
      }
    }
  }

  $("alarms-csv").href = "/analytics/alarms?format=csv";
  $("alarms-csv").download = "alarms.csv";
  $("alarms-more").addEventListener("click", () => loadAlarms(true));

  // ── KPIs ──────────────────────────────────────────────────────────────────────────────
  async function loadKpis() {
    const box = $("kpis");
    try {
      const k = await getJSON("/analytics/fleet-summary");
      const st = k.status || {};
      const td = k.today || {};
      const sev = k.alarms_by_severity || {};
      const tiles = [
        [text(st.vehicles), "vehicles"], [text(st.moving), "moving"], [text(td.trips), "trips today"],
        [num(td.distance_km, 0), "km today"], [duration(td.driving_time_s), "driving"],
        [text(td.vehicles_not_moved), "not moved"], [text(td.alarms), "alarms today"],
        [text((sev.critical || 0) + (sev.high || 0)), "critical/high"],
      ];
      box.replaceChildren(...tiles.map(([value, label]) => {
        const d = el("div", "kpi");
        d.append(el("b", null, value), el("span", null, label));
        return d;
      }));
      box.title = `EAT day ${text(k.date)}`;
      document.body.dataset.kpis = "1";
    } catch (err) {
      failed(box, err, "fleet KPIs");
    }
  }

  // ── Layers: open tickets and today's fuel fills ───────────────────────────────────────
  async function loadTickets() {
    const info = $("tickets-info");
    info.textContent = "…";
    try {
      const fc = await getJSON("/analytics/tickets-map");
      ticketsLayer.clearLayers();
      let n = 0;
      for (const f of fc.features || []) {
        const p = f.properties || {};
        if (!f.geometry || f.geometry.type !== "Point" || p.bucket === "closed") continue;
        const [lng, lat] = f.geometry.coordinates;
        const m = L.circleMarker([lat, lng], { radius: 6, weight: 2, color: "#fff", fillColor: "#8e44ad",
                                               fillOpacity: 0.9, className: "ticket-marker" });
        const tip = el("div");
        tip.append(el("b", null, text(p.ticket_id)), ` · ${text(p.status)} · ${text(p.location_name)}`,
                   el("br"), `open ${num(p.open_hours, 0)} h · ${text(p.cluster)} · ${text(p.assigned_team)}`);
        m.bindTooltip(tip);
        m.addTo(ticketsLayer);
        n += 1;
      }
      const s = fc.summary || {};
      info.textContent = `${n} on the map` + (s.open_total !== undefined ? ` (${text(s.open_total)} open, ${text(s.open_mapped)} with a place)` : "");
      document.body.dataset.tickets = String(n);
    } catch (err) {
      failed(info, err, "tickets");
    }
  }

  // Fills carry no position: each is shown at its vehicle's current position.
  async function loadFuel() {
    const info = $("fuel-info");
    const list = $("fuel-list");
    info.textContent = "…";
    const today = eatDay(new Date());
    try {
      const data = await getJSON(`/analytics/fuel-fills?from=${today}&to=${today}`);
      fuelLayer.clearLayers();
      const fills = data.fills || [];
      const byImei = new Map(state.vehicles.map((v) => [v.p.imei, v]));
      let placed = 0;
      const rows = fills.map((f) => {
        const v = byImei.get(f.imei);
        const label = `${eatTime(f.filled_at)} · ${text(f.vehicle_number || f.car)} · ${num(f.litres, 1)} L · KES ${num(f.amount_kes, 0)}`;
        if (v) {
          const m = L.circleMarker([v.lat, v.lng], { radius: 10, weight: 3, color: "#d35400", fill: false, className: "fuel-marker" });
          m.bindTooltip(el("span", null, "fuel fill " + label));
          m.addTo(fuelLayer);
          placed += 1;
        }
        return el("li", null, label);
      });
      list.replaceChildren(...rows);
      info.textContent = `${fills.length} today (${placed} shown at their vehicle's position)`;
      document.body.dataset.fuel = String(fills.length);
    } catch (err) {
      failed(info, err, "fuel fills");
    }
  }

  function toggleLayer(box, layer, load) {
    box.addEventListener("change", () => {
      if (box.checked) {
        layer.addTo(map);
        load();
      } else {
        map.removeLayer(layer);
      }
    });
  }
  toggleLayer($("layer-tickets"), ticketsLayer, loadTickets);
  toggleLayer($("layer-fuel"), fuelLayer, loadFuel);

  // ── Ingest health ─────────────────────────────────────────────────────────────────────
  async function refreshHealth() {
    const h = await getJSON("/health/ingest");
    const status = FEED_STATUSES.includes(h.status) ? h.status : "none";
    const badge = $("health-status");
    badge.textContent = text(h.status);
    badge.className = "badge st-" + status;
    const rows = (h.feeds || []).map((f) => {
      const feedStatus = FEED_STATUSES.includes(f.status) ? f.status : "none";
      const machine = f.feed || `${text(f.source)} ${text(f.method)}`;
      const tr = el("tr");
      const name = el("td");
      // The readable name (`label`), its machine key below; older APIs: source and method.
      name.append(el("span", "feed-label", f.label ? String(f.label) : machine));
      if (f.label && machine !== f.label) name.append(el("div", "feed-key muted", machine));
      const statusCell = el("td");
      statusCell.append(el("span", "st st-" + feedStatus, text(f.status)));
      const lastError = f.last_error ? `last error: ${f.last_error}` : "";
      const failures = f.failures_24h !== undefined ? `${text(f.failures_24h)} / ${text(f.calls_24h)} calls failed in 24 h` : "";
      statusCell.title = [failures, lastError].filter(Boolean).join("\n");
      const last = f.last_success || f.last_success_at;
      const lastCell = el("td", null, ago(last));
      if (last) lastCell.title = eatTime(last, true);
      tr.append(name, statusCell, lastCell, el("td", null, text(f.rows_24h)));
      return tr;
    });
    document.querySelector("#health tbody").replaceChildren(...rows);
    document.body.dataset.feeds = String(rows.length);
  }

  // ── Side panel (collapsible; below the map on a phone) ───────────────────────────────
  const toggle = $("sidebar-toggle");
  toggle.addEventListener("click", () => {
    const hidden = document.body.classList.toggle("sidebar-hidden");
    toggle.setAttribute("aria-expanded", String(!hidden));
    map.invalidateSize();
  });
  const narrow = window.matchMedia("(max-width: 700px)");
  const onWidth = () => {
    document.body.classList.toggle("narrow", narrow.matches);
    map.invalidateSize();
  };
  narrow.addEventListener("change", onWidth);
  onWidth();

  // ── Low zoom: the live fleet from vector tiles ───────────────────────────────────────
  // At z ≤ FLEET_TILE_MAX_ZOOM a 256-px tile spans ≥ 156 km and a pixel ≥ 600 m: vehicles are
  // dots over a region or the whole country, too close to click apart, while thousands of SVG
  // markers and their clustering cost the browser far more than drawing the read-API's tiles
  // (GET /tiles/live/{z}/{x}/{y}.mvt, decoded by web/mvt.js, painted on canvas). From z 9 on:
  // markers and clusters with tooltips and clicks; the selected vehicle keeps its marker at
  // every zoom. The tiles follow the list's search and status filters (a feature whose IMEI
  // the list does not show is not drawn) and are fetched again at most every REFRESH_MS while
  // positions change: 15 s of driving is less than a pixel at these zooms. Without the tiles
  // endpoint (its TileJSON does not load) the page keeps markers at every zoom.
  const FLEET_TILE_MAX_ZOOM = 8;
  const FLEET_TILEJSON = "/tiles/live.json";
  const FLEET_TILE_PATH = "/tiles/live/{z}/{x}/{y}.mvt";
  const fleetTiles = { layer: null, url: null, low: false, changed: false, visible: null, loading: false };

  function lowZoom() { return fleetTiles.layer !== null && map.getZoom() <= FLEET_TILE_MAX_ZOOM; }

  async function fetchFleetTile(coords) {
    const url = fleetTiles.url.replace("{z}", coords.z).replace("{x}", coords.x).replace("{y}", coords.y);
    // no-cache: revalidate (the tiles carry cache headers; a live tile must not be stale).
    const response = await fetchWithKey(url, { cache: "no-cache" });
    if (response.status === 204) return [];
    if (!response.ok) throw new Error(url + " answered " + response.status);
    const layer = FleetMvt.decode(new Uint8Array(await response.arrayBuffer())).live;
    if (!layer) return [];
    const size = 256 / (layer.extent || 4096);
    const points = [];
    for (const f of layer.features) {
      if (f.type !== "Point") continue;
      for (const part of f.geometry) {
        for (const [x, y] of part) points.push({ x: x * size, y: y * size, p: f.properties });
      }
    }
    return points;
  }

  function paintFleetTile(canvas) {
    const ctx = canvas.getContext("2d");
    const ratio = canvas.width / 256;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, 256, 256);
    let drawn = 0;
    for (const pt of canvas.fleetPoints || []) {
      const imei = String(pt.p.imei);
      if (imei === String(state.selected)) continue; // drawn as its marker
      if (fleetTiles.visible && !fleetTiles.visible.has(imei)) continue;
      ctx.beginPath();
      ctx.arc(pt.x, pt.y, 4.5, 0, 2 * Math.PI);
      ctx.fillStyle = COLORS[pt.p.status] || COLORS.offline;
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
      drawn += 1;
    }
    canvas.dataset.points = String(drawn);
  }

  // How many vehicles the tiles of the current zoom show (a vehicle near a tile edge is in
  // two tiles' buffers: counted once).
  function countFleetPoints() {
    const layer = fleetTiles.layer;
    const shown = new Set();
    if (layer && layer._map) {
      const z = Math.round(map.getZoom());
      for (const t of Object.values(layer._tiles)) {
        if (t.coords.z !== z) continue;
        for (const pt of t.el.fleetPoints || []) {
          const imei = String(pt.p.imei);
          if (imei !== String(state.selected) && (!fleetTiles.visible || fleetTiles.visible.has(imei))) shown.add(imei);
        }
      }
    }
    document.body.dataset.tilePoints = String(shown.size);
    $("fleet-tiles-note").textContent = layer && layer._map ? `${shown.size} vehicles drawn from vector tiles` : "";
  }

  const FleetTileLayer = L.GridLayer.extend({
    createTile(coords, done) {
      const canvas = L.DomUtil.create("canvas", "fleet-tile");
      const ratio = Math.min(window.devicePixelRatio || 1, 2);
      canvas.width = 256 * ratio;
      canvas.height = 256 * ratio;
      fetchFleetTile(coords).then((points) => {
        canvas.fleetPoints = points;
        paintFleetTile(canvas);
        done(null, canvas);
        countFleetPoints();
      }).catch((err) => {
        if (err instanceof KeyNeeded) askForKey(err);
        done(err, canvas);
      });
      return canvas;
    },
  });

  // Repaint the loaded tiles (filters or the selection changed): no new requests.
  function repaintFleetTiles() {
    const layer = fleetTiles.layer;
    if (!layer || !layer._map) return;
    for (const t of Object.values(layer._tiles)) paintFleetTile(t.el);
    countFleetPoints();
  }

  // Positions changed: the tiles are fetched again on the next refresh tick (in place, no flicker).
  function fleetChanged() { fleetTiles.changed = true; }

  function refreshFleetTiles() {
    const layer = fleetTiles.layer;
    if (!layer || !layer._map || !fleetTiles.changed) return;
    fleetTiles.changed = false;
    for (const t of Object.values(layer._tiles)) {
      fetchFleetTile(t.coords).then((points) => {
        t.el.fleetPoints = points;
        paintFleetTile(t.el);
        countFleetPoints();
      }).catch(() => { /* keep the last picture */ });
    }
  }

  // Markers or tiles, by zoom.
  function updateFleetMode() {
    const low = lowZoom();
    document.body.dataset.fleetLayer = low ? "tiles" : "markers";
    if (low === fleetTiles.low) return;
    fleetTiles.low = low;
    if (low) fleetTiles.layer.addTo(map);
    else map.removeLayer(fleetTiles.layer);
    renderVehicles();
    countFleetPoints();
  }
  map.on("zoomend", updateFleetMode);

  // Feature check: the tiles are used only when the read-API has them (its TileJSON loads).
  async function enableFleetTiles() {
    if (fleetTiles.layer || fleetTiles.loading || typeof FleetMvt === "undefined") return;
    fleetTiles.loading = true;
    let retry = false;
    try {
      const tj = await getJSON(FLEET_TILEJSON);
      const template = Array.isArray(tj.tiles) && typeof tj.tiles[0] === "string" ? new URL(tj.tiles[0], location.href) : null;
      // Only this origin (the CSP's connect-src) and only a template with the placeholders.
      fleetTiles.url = template && template.origin === location.origin && /\{z\}.*\{x\}.*\{y\}/.test(decodeURI(template.pathname))
        ? decodeURI(template.pathname) + template.search : FLEET_TILE_PATH;
      fleetTiles.layer = new FleetTileLayer({
        pane: "fleet", minZoom: Number.isInteger(tj.minzoom) ? tj.minzoom : 0, maxZoom: FLEET_TILE_MAX_ZOOM,
        updateWhenZooming: false,
      });
      fleetTiles.changed = false;
      updateFleetMode();
    } catch (err) {
      document.body.dataset.fleetLayer = "markers"; // no tiles on this server: markers at every zoom
      // A 401 to a request sent before the key was entered: the form's submit found this call
      // still loading and returned, so ask again now, with the key.
      retry = err instanceof KeyNeeded && err.stale;
    } finally {
      fleetTiles.loading = false;
    }
    if (retry) enableFleetTiles();
  }

  // ── Live positions: server-sent events, polling as the fallback ──────────────────────
  // GET /webhook/live-positions/stream (dashboard/live_stream.py, docs/api.md) sends a
  // `snapshot` (the JSON endpoint's FeatureCollection), then `position` (a Feature) and
  // `remove` events as fixes reach the database: while it is open the page does not poll.
  // EventSource cannot send the key header, so the page POSTs .../stream/token with it and
  // opens ?token=; before the token expires a new one opens a new EventSource that resumes
  // after the last event id (?last_event_id=: the server sends only what changed since).
  // Refused (503: the worker streams to LIVE_STREAM_MAX_CLIENTS already; 404: an API
  // without the stream), broken or not open within STREAM_OPEN_MS: the page polls every
  // REFRESH_MS, says "polling", and tries the stream again after STREAM_RETRY_MS.
  const STREAM_PATH = "/webhook/live-positions/stream";
  const STREAM_OPEN_MS = 10000;
  const STREAM_RETRY_MS = 30000; // the stream's Retry-After on 503
  const TOKEN_MARGIN_S = 60; // renew this long before the token expires
  const live = { source: null, lastId: null, renewTimer: null, retryTimer: null, openTimer: null };

  function setLiveMode(mode) {
    const badge = $("live-status");
    badge.textContent = mode;
    badge.className = "badge live-" + mode;
    badge.title = mode === "live" ? "positions arrive as they reach the database (server-sent events)"
                : mode === "polling" ? `live stream unavailable: positions are fetched every ${REFRESH_MS / 1000} s`
                : "opening the live stream";
    document.body.dataset.live = mode;
  }
  setLiveMode("connecting");

  async function streamToken() {
    const response = await fetchWithKey(STREAM_PATH + "/token", { method: "POST" });
    if (!response.ok) throw new Error("the live stream's token: HTTP " + response.status);
    return response.json();
  }

  function closeStream() {
    clearTimeout(live.renewTimer);
    clearTimeout(live.openTimer);
    if (live.source) live.source.close();
    live.source = null;
  }

  // The stream failed (or never opened): poll at once and from now on, retry it later.
  function streamFailed(wasLive) {
    closeStream();
    const first = document.body.dataset.live !== "polling";
    setLiveMode("polling");
    if (first) refreshPositions().catch((err) => { $("updated").textContent = "error: " + err.message; });
    clearTimeout(live.retryTimer);
    // A stream that was open just broke (its token expired on a reconnect, a worker restarted):
    // a new token at once; a refused one is asked again only after Retry-After.
    live.retryTimer = setTimeout(openStream, wasLive ? 1000 : STREAM_RETRY_MS);
  }

  function onStream(source, name, handle) {
    source.addEventListener(name, (event) => {
      if (source !== live.source) return; // a replaced stream's late event
      if (event.lastEventId) live.lastId = event.lastEventId;
      handle(event);
    });
  }

  async function openStream() {
    clearTimeout(live.retryTimer);
    let token;
    try {
      token = await streamToken();
    } catch (err) {
      if (err instanceof KeyNeeded) {
        if (err.stale) return; // sent before the key was entered: the form's submit opened another
        closeStream();
        askForKey(err); // the key form's submit opens the stream again
        return;
      }
      streamFailed(false);
      return;
    }
    const query = new URLSearchParams({ token: String(token.token) });
    if (live.lastId !== null) query.set("last_event_id", live.lastId);
    const wasLive = document.body.dataset.live === "live";
    closeStream();
    const source = new EventSource(STREAM_PATH + "?" + query.toString());
    live.source = source;
    live.openTimer = setTimeout(() => { if (source === live.source) streamFailed(false); }, STREAM_OPEN_MS);
    source.addEventListener("open", () => {
      if (source !== live.source) return;
      clearTimeout(live.openTimer);
      setLiveMode("live");
    });
    source.addEventListener("error", () => {
      if (source !== live.source) return;
      // CLOSED: refused (503, 401, 4xx), EventSource gives up. CONNECTING: it reconnects by
      // itself with Last-Event-ID; not open again within STREAM_OPEN_MS → polling.
      if (source.readyState === EventSource.CLOSED) {
        streamFailed(document.body.dataset.live === "live");
      } else {
        clearTimeout(live.openTimer);
        live.openTimer = setTimeout(() => {
          if (source === live.source && source.readyState !== EventSource.OPEN) streamFailed(false);
        }, STREAM_OPEN_MS);
      }
    });
    onStream(source, "snapshot", (e) => { applyCollection(JSON.parse(e.data)); });
    onStream(source, "position", (e) => { applyPosition(JSON.parse(e.data)); });
    onStream(source, "remove", (e) => { applyRemove((JSON.parse(e.data) || {}).id); });
    // The token only opens a connection: renew it (a new stream, resumed) before it expires.
    const ttl = Math.max(Number(token.expires_in) || 300, TOKEN_MARGIN_S * 2);
    live.renewTimer = setTimeout(openStream, (ttl - TOKEN_MARGIN_S) * 1000);
    if (wasLive) setLiveMode("live"); // a renewal: no flicker to "connecting"
  }

  // ── Refresh loop ──────────────────────────────────────────────────────────────────────
  let ticks = 0;
  async function tick() {
    // Positions are polled only while the live stream is unavailable.
    const polling = document.body.dataset.live === "polling";
    const results = await Promise.allSettled([polling ? refreshPositions() : null, refreshHealth()]);
    const errors = results.filter((r) => r.status === "rejected").map((r) => r.reason)
      .filter((reason) => !(reason instanceof KeyNeeded && reason.stale));
    const keyNeeded = errors.find((reason) => reason instanceof KeyNeeded);
    if (keyNeeded) askForKey(keyNeeded);
    if (errors.length) $("updated").textContent = "error: " + errors[0].message;
    document.body.dataset.ready = "1";
    if (keyNeeded) return;
    refreshFleetTiles();
    // Slower panels: at start and every 4th refresh (a minute); alarms only while the
    // operator has not paged further (a refresh would drop the pages read).
    if (ticks % 4 === 0) {
      loadKpis();
      if (!state.alarmsPaged) loadAlarms(false);
      if ($("layer-tickets").checked) loadTickets();
      if ($("layer-fuel").checked) loadFuel();
    }
    ticks += 1;
  }

  openStream();
  enableFleetTiles();
  tick();
  setInterval(tick, REFRESH_MS);
})();
