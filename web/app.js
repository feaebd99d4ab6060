// Operator page: live fleet markers (refreshed), a vehicle's 24 h track on click, and the
// ingest health table. Plain browser JavaScript, no build step; Leaflet from npm.
(function () {
  "use strict";
  const REFRESH_MS = 15000;
  const COLORS = { moving: "#2e8540", idle: "#c77c02", parked: "#1f5fa8", offline: "#7a8794" };

  const params = new URLSearchParams(location.search);
  if (params.get("key")) localStorage.setItem("dashboardApiKey", params.get("key"));
  const apiKey = localStorage.getItem("dashboardApiKey");

  async function getJSON(url) {
    const headers = apiKey ? { "X-API-Key": apiKey } : {};
    const response = await fetch(url, { headers });
    if (!response.ok) throw new Error(url + " answered " + response.status);
    return response.json();
  }

  // Nairobi, Mombasa and Kampala in view until the first positions arrive.
  const map = L.map("map", { preferCanvas: false }).setView([-1.8, 36.5], 6);
  if (params.get("tiles") !== "off") {
    // Optional background; markers render without it (offline, or tiles=off).
    L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
      maxZoom: 19, attribution: "© OpenStreetMap contributors",
    }).addTo(map);
  }
  const legend = L.control({ position: "bottomleft" });
  legend.onAdd = function () {
    const div = L.DomUtil.create("div", "legend");
    div.innerHTML = Object.entries(COLORS).map(([k, c]) => `<i style="background:${c}"></i>${k}`).join("");
    return div;
  };
  legend.addTo(map);

  // City labels keep the map readable when no internet tiles load.
  const CITIES = [["Nairobi", -1.2864, 36.8172], ["Mombasa", -4.0435, 39.6682], ["Kampala", 0.3476, 32.5825]];
  for (const [name, lat, lng] of CITIES) {
    L.marker([lat, lng], { interactive: false, icon: L.divIcon({ className: "city-label", html: name }) }).addTo(map);
  }

  const markers = L.layerGroup().addTo(map);
  const trackLayer = L.layerGroup().addTo(map);
  let fitted = false;

  function text(value) {
    return value === null || value === undefined ? "–" : String(value);
  }

  function ago(iso) {
    if (!iso) return "never";
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 90) return s + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  async function refreshPositions() {
    const fc = await getJSON("/webhook/live-positions");
    markers.clearLayers();
    const bounds = [];
    for (const f of fc.features || []) {
      const [lng, lat] = f.geometry.coordinates;
      const p = f.properties || {};
      const label = p.vehicle_number || p.vehicle_name || p.imei;
      const marker = L.circleMarker([lat, lng], {
        radius: 7, weight: 2, color: "#fff", fillOpacity: 0.9,
        fillColor: COLORS[p.status] || COLORS.offline, className: "vehicle-marker",
      });
      marker.bindTooltip(`${label} · ${text(p.status)} · ${text(p.speed_kmh)} km/h`);
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
      map.fitBounds(bounds, { padding: [30, 30], animate: false });
      fitted = true;
      // `?select=<vehicle number>` opens that vehicle's track (links from other tools, tests).
      const wanted = params.get("select");
      const hit = (fc.features || []).find((f) => wanted && f.properties.vehicle_number === wanted);
      if (hit) await showTrack(hit.properties, wanted);
    }
  }

  async function showTrack(p, label) {
    const box = document.getElementById("vehicle");
    box.textContent = "loading track of " + label + "…";
    try {
      const fc = await getJSON("/webhook/live-positions/track?hours=24&vehicle_number=" +
                               encodeURIComponent(p.vehicle_number || label));
      trackLayer.clearLayers();
      const line = (fc.features || []).find((f) => f.geometry.type === "LineString");
      if (line) {
        const latlngs = line.geometry.coordinates.map(([lng, lat]) => [lat, lng]);
        const track = L.polyline(latlngs, { color: "#c0392b", weight: 3, className: "vehicle-track" });
        track.addTo(trackLayer);
        map.fitBounds(track.getBounds(), { padding: [40, 40], maxZoom: 14, animate: false });
      }
      const lp = line ? line.properties : {};
      box.innerHTML = `<b>${label}</b> · ${text(p.driver_name)} · ${text(p.cost_centre)}<br>` +
        `status ${text(p.status)}, ${text(p.speed_kmh)} km/h, fix ${ago(p.gps_time)}<br>` +
        (line ? `24 h: ${text(lp.distance_km)} km, ${line.geometry.coordinates.length} points`
              : "no track in the last 24 h");
      document.body.dataset.trackPoints = String(line ? line.geometry.coordinates.length : 0);
    } catch (err) {
      box.textContent = "track unavailable: " + err.message;
    }
  }

  async function refreshHealth() {
    const h = await getJSON("/health/ingest");
    const badge = document.getElementById("health-status");
    badge.textContent = h.status || "?";
    badge.className = "badge st-" + (h.status || "none");
    const rows = (h.feeds || []).map((f) =>
      `<tr><td>${text(f.source)} ${text(f.method)}</td>` +
      `<td><span class="st st-${text(f.status)}">${text(f.status)}</span></td>` +
      `<td>${ago(f.last_success_at)}</td><td>${text(f.rows_24h)}</td>` +
      `<td>${text(f.failures_24h)} / ${text(f.calls_24h)}</td></tr>`);
    document.querySelector("#health tbody").innerHTML = rows.join("");
    document.body.dataset.feeds = String(rows.length);
  }

  async function tick() {
    const results = await Promise.allSettled([refreshPositions(), refreshHealth()]);
    const failed = results.filter((r) => r.status === "rejected");
    if (failed.length) document.getElementById("updated").textContent = "error: " + failed[0].reason.message;
    document.body.dataset.ready = "1";
  }

  tick();
  setInterval(tick, REFRESH_MS);
})();
