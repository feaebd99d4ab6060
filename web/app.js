// Operator page: live fleet markers (refreshed), a vehicle's 24 h track on click, and the
// ingest health table. Plain browser JavaScript, no build step; Leaflet from npm.
//
// Every value from the API (plates, driver names, cost centres, feed names...) comes from the
// device registry or JIMI and is data, never markup: the DOM is built with createElement and
// textContent only, and Leaflet tooltips get DOM elements (Leaflet reads a string as HTML).
(function () {
  "use strict";
  const REFRESH_MS = 15000;
  const COLORS = { moving: "#2e8540", idle: "#c77c02", parked: "#1f5fa8", offline: "#7a8794" };
  const FEED_STATUSES = ["ok", "stale", "failing"];
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

  class KeyNeeded extends Error {
    constructor(refused) {
      super(refused ? "the API refused the key" : "the API needs a key");
      this.refused = refused;
    }
  }

  async function getJSON(url) {
    const key = storedKey();
    const headers = key ? { [KEY_HEADER]: key } : {};
    const response = await fetch(url, { headers, credentials: "same-origin" });
    if (response.status === 401) throw new KeyNeeded(Boolean(key));
    if (!response.ok) throw new Error(url.split("?")[0] + " answered " + response.status);
    return response.json();
  }

  // DOM helpers: text only.
  function el(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  function text(value) {
    return value === null || value === undefined || value === "" ? "–" : String(value);
  }

  function ago(iso) {
    if (!iso) return "never";
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (!Number.isFinite(s)) return "–";
    if (s < 90) return s + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  // ── The API key form (shown when the API answers 401) ─────────────────────────────────
  const keyForm = document.getElementById("key-form");
  const keyInput = document.getElementById("key-input");
  const keyMessage = document.getElementById("key-message");

  function askForKey(refused) {
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
    tick();
  });

  // ── The map ───────────────────────────────────────────────────────────────────────────
  // Nairobi, Mombasa and Kampala in view until the first positions arrive.
  const map = L.map("map", { preferCanvas: false }).setView([-1.8, 36.5], 6);
  if (params.get("tiles") !== "off") {
    // Optional background; markers render without it (offline, or tiles=off). Its host is
    // allowed in the page's CSP img-src (dashboard/operator.py TILE_ORIGIN).
    L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
      maxZoom: 19, attribution: "© OpenStreetMap contributors",
    }).addTo(map);
  }
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
    L.marker([lat, lng], { interactive: false, icon }).addTo(map);
  }

  const markers = L.layerGroup().addTo(map);
  const trackLayer = L.layerGroup().addTo(map);
  let fitted = false;

  function tooltipContent(label, p) {
    const div = el("div", "vehicle-tooltip");
    div.append(el("b", null, label), ` · ${text(p.status)} · ${text(p.speed_kmh)} km/h`);
    return div;
  }

  async function refreshPositions() {
    const fc = await getJSON("/webhook/live-positions");
    markers.clearLayers();
    const bounds = [];
    for (const f of fc.features || []) {
      if (!f.geometry || f.geometry.type !== "Point") continue;
      const [lng, lat] = f.geometry.coordinates;
      const p = f.properties || {};
      const label = text(p.vehicle_number || p.vehicle_name || p.imei);
      const marker = L.circleMarker([lat, lng], {
        radius: 7, weight: 2, color: "#fff", fillOpacity: 0.9,
        fillColor: COLORS[p.status] || COLORS.offline, className: "vehicle-marker",
      });
      marker.bindTooltip(tooltipContent(label, p));
      marker.on("click", () => showTrack(p, label));
      marker.addTo(markers);
      bounds.push([lat, lng]);
    }
    const s = fc.summary || {};
    document.getElementById("summary").textContent =
      `${bounds.length} vehicles — ${text(s.moving)} moving, ${text(s.idle)} idle, ` +
      `${text(s.parked)} parked, ${text(s.offline)} offline`;
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.vehicles = String(bounds.length);
    if (!fitted && bounds.length) {
      map.fitBounds(bounds, { padding: [30, 30], maxZoom: 14, animate: false });
      fitted = true;
      // `?select=<vehicle number>` opens that vehicle's track (links from other tools, tests).
      const wanted = params.get("select");
      const hit = (fc.features || []).find((f) => wanted && f.properties && f.properties.vehicle_number === wanted);
      if (hit) await showTrack(hit.properties, wanted);
    }
  }

  async function showTrack(p, label) {
    const box = document.getElementById("vehicle");
    const title = el("div", "vehicle-title");
    title.append(el("b", "vehicle-label", label));
    if (p.vehicle_name && p.vehicle_name !== label) title.append(" ", el("span", "vehicle-name", p.vehicle_name));
    const who = el("div", "vehicle-who");
    who.append(el("span", "driver", text(p.driver_name)), " · ", el("span", "cost-centre", text(p.cost_centre)));
    const state = el("div", "vehicle-state",
                     `status ${text(p.status)}, ${text(p.speed_kmh)} km/h, fix ${ago(p.gps_time)}`);
    const trackInfo = el("div", "vehicle-track-info", "loading the last 24 h track…");
    box.replaceChildren(title, who, state, trackInfo);
    try {
      // The IMEI names the vehicle exactly; a plate is looked up in any spelling.
      const fc = await getJSON("/webhook/live-positions/track?hours=24&vehicle_number=" +
                               encodeURIComponent(p.imei || p.vehicle_number || label));
      trackLayer.clearLayers();
      const line = (fc.features || []).find((f) => f.geometry && f.geometry.type === "LineString");
      if (line) {
        const latlngs = line.geometry.coordinates.map(([lng, lat]) => [lat, lng]);
        const track = L.polyline(latlngs, { color: "#c0392b", weight: 3, className: "vehicle-track" });
        track.addTo(trackLayer);
        map.fitBounds(track.getBounds(), { padding: [40, 40], maxZoom: 14, animate: false });
      }
      const lp = line ? line.properties || {} : {};
      trackInfo.textContent = line
        ? `24 h: ${text(lp.distance_km)} km, ${line.geometry.coordinates.length} points`
        : "no track in the last 24 h";
      document.body.dataset.trackPoints = String(line ? line.geometry.coordinates.length : 0);
    } catch (err) {
      trackInfo.textContent = "track unavailable: " + err.message;
      if (err instanceof KeyNeeded) askForKey(err.refused);
    }
  }

  async function refreshHealth() {
    const h = await getJSON("/health/ingest");
    const status = FEED_STATUSES.includes(h.status) ? h.status : "none";
    const badge = document.getElementById("health-status");
    badge.textContent = text(h.status);
    badge.className = "badge st-" + status;
    const rows = (h.feeds || []).map((f) => {
      const feedStatus = FEED_STATUSES.includes(f.status) ? f.status : "none";
      const tr = el("tr");
      const statusCell = el("td");
      statusCell.append(el("span", "st st-" + feedStatus, text(f.status)));
      tr.append(
        el("td", null, `${text(f.source)} ${text(f.method)}`),
        statusCell,
        el("td", null, ago(f.last_success_at)),
        el("td", null, text(f.rows_24h)),
        el("td", null, `${text(f.failures_24h)} / ${text(f.calls_24h)}`),
      );
      return tr;
    });
    document.querySelector("#health tbody").replaceChildren(...rows);
    document.body.dataset.feeds = String(rows.length);
  }

  async function tick() {
    const results = await Promise.allSettled([refreshPositions(), refreshHealth()]);
    const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
    const keyNeeded = failed.find((reason) => reason instanceof KeyNeeded);
    if (keyNeeded) askForKey(keyNeeded.refused);
    if (failed.length) document.getElementById("updated").textContent = "error: " + failed[0].message;
    document.body.dataset.ready = "1";
  }

  tick();
  setInterval(tick, REFRESH_MS);
})();
