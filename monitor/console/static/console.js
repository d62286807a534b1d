// The operator console's live updates and buttons. No framework, no build step.
// Everything received is put into the page with textContent or SVG attributes, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const NAMES = { fire: "Fire", smoke: "Smoke", no_helmet: "No hard hat" };
const PROBLEMS = { offline: "offline", frozen: "frozen picture", blank: "blank picture",
  view_changed: "view changed", no_verdict: "no verdict", model_unavailable: "model unavailable" };
const OUTCOMES = { confirmed: "confirmed by zoom-in", rejected: "rejected by zoom-in",
  failed: "zoom-in failed", unverified: "not verified (no box)" };
const active = new Map(); // camera -> Map(event id -> hazard)

function csrf() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function say(text, failed) {
  const status = document.getElementById("status");
  if (!status) return;
  status.textContent = text;
  status.classList.toggle("failed", Boolean(failed));
}

// Boxes (in pixels of the image sent to the model) and the region of interest's outline.
function drawOverlay(frame, sample) {
  const svg = frame.querySelector("svg.overlay");
  if (!svg) return;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const width = sample ? sample.width : 16, height = sample ? sample.height : 9;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  if (sample) {
    // Zones and crops come in pixels of the sent image, mapped by the daemon.
    for (const zone of sample.zones || []) {
      const group = document.createElementNS(SVG, "g");
      group.setAttribute("class", "zone");
      const polygon = document.createElementNS(SVG, "polygon");
      polygon.setAttribute("class", "zone");
      polygon.setAttribute("points", zone.points.map((p) => `${p[0]},${p[1]}`).join(" "));
      group.appendChild(polygon);
      const name = document.createElementNS(SVG, "text");
      name.setAttribute("class", "zone-name");
      name.setAttribute("x", zone.points[0][0] + 4);
      name.setAttribute("y", zone.points[0][1] + height / 20);
      name.setAttribute("font-size", Math.round(height / 2) / 10);
      name.textContent = zone.name;
      group.appendChild(name);
      svg.appendChild(group);
    }
    for (const result of sample.verification || []) {
      for (const check of result.checks) {
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("class", `crop ${check.agrees ? "agrees" : "disagrees"}`);
        rect.setAttribute("x", check.x1);
        rect.setAttribute("y", check.y1);
        rect.setAttribute("width", Math.max(0, check.x2 - check.x1));
        rect.setAttribute("height", Math.max(0, check.y2 - check.y1));
        const title = document.createElementNS(SVG, "title");
        title.textContent = `zoom-in ${NAMES[result.hazard] || result.hazard}: ${check.seen || check.error || check.answer}`;
        rect.appendChild(title);
        svg.appendChild(rect);
      }
    }
    for (const box of sample.boxes) {
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("class", `box ${box.hazard}`);
      rect.setAttribute("x", box.x1);
      rect.setAttribute("y", box.y1);
      rect.setAttribute("width", Math.max(0, box.x2 - box.x1));
      rect.setAttribute("height", Math.max(0, box.y2 - box.y1));
      const title = document.createElementNS(SVG, "title");
      title.textContent = box.label;
      rect.appendChild(title);
      svg.appendChild(rect);
    }
  }
  const roiText = frame.dataset.roi;
  if (roiText && sample) {
    // The image sent is the region's bounding box: place the outline inside it.
    const points = JSON.parse(roiText);
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    const x0 = Math.min(...xs), y0 = Math.min(...ys);
    const sx = width / Math.max(1e-6, Math.max(...xs) - x0);
    const sy = height / Math.max(1e-6, Math.max(...ys) - y0);
    const corners = points.length === 2
      ? [[points[0][0], points[0][1]], [points[1][0], points[0][1]],
         [points[1][0], points[1][1]], [points[0][0], points[1][1]]]
      : points;
    const polygon = document.createElementNS(SVG, "polygon");
    polygon.setAttribute("class", "roi");
    polygon.setAttribute("points",
      corners.map((p) => `${(p[0] - x0) * sx},${(p[1] - y0) * sy}`).join(" "));
    svg.appendChild(polygon);
  }
}

function showSample(sample) {
  for (const holder of document.querySelectorAll(`[data-camera="${CSS.escape(sample.camera)}"]`)) {
    const frame = holder.querySelector(".frame");
    if (frame) {
      const img = frame.querySelector("img");
      // A new sample is a new URL: the browser fetches each analysed image once.
      img.src = sample.image;
      img.hidden = false;
      const nothing = frame.querySelector(".nothing");
      if (nothing) nothing.remove();
      drawOverlay(frame, sample);
    }
    const summary = holder.querySelector(".summary");
    if (summary) summary.textContent = sample.summary;
    const when = holder.querySelector(".when");
    if (when) when.textContent = sample.captured_at;
    const timing = holder.querySelector(".timing");
    if (timing) timing.textContent = `frame age ${sample.frame_age_s} s · model ${sample.latency_s} s`;
    const verification = holder.querySelector(".verification");
    if (verification) {
      verification.textContent = "";
      for (const result of sample.verification || []) {
        const outcome = document.createElement("span");
        outcome.className = `outcome ${result.outcome}`;
        outcome.textContent = `${NAMES[result.hazard] || result.hazard}: ${result.text}`;
        verification.appendChild(outcome);
      }
    }
  }
}

function showStream(camera, stream) {
  for (const holder of document.querySelectorAll(`[data-camera="${CSS.escape(camera)}"]`)) {
    const span = holder.querySelector(".stream");
    if (!span || !stream) continue;
    span.className = `stream ${stream.state}`;
    span.textContent = stream.state;
    span.title = stream.detail;
  }
}

function showHealth(camera, problems) {
  for (const holder of document.querySelectorAll(`[data-camera="${CSS.escape(camera)}"]`)) {
    const health = holder.querySelector(".health");
    if (!health) continue;
    health.textContent = "";
    for (const problem of problems) {
      const span = document.createElement("span");
      span.className = `problem ${problem.problem}`;
      span.title = `since ${problem.since}: ${problem.detail}`;
      span.textContent = PROBLEMS[problem.problem] || problem.problem;
      health.appendChild(span);
    }
  }
}

function evidenceCell(row, alert) {
  const td = cell(row, "", "evidence");
  if (alert.snapshot) {
    const snapshot = document.createElement("span");
    snapshot.className = "path";
    snapshot.textContent = alert.snapshot;
    td.appendChild(snapshot);
  }
  if (alert.clip) {
    const clip = document.createElement("div");
    clip.className = "clip";
    if (alert.clip.ready) {
      const link = document.createElement("a");
      link.href = `/api/evidence/${encodeURIComponent(alert.id)}/clip.mp4`;
      link.textContent = "clip (MP4)";
      clip.appendChild(link);
    } else clip.appendChild(document.createTextNode("clip being recorded"));
    const path = document.createElement("span");
    path.className = "path";
    path.textContent = ` ${alert.clip.path}`;
    clip.appendChild(path);
    td.appendChild(clip);
  }
  (alert.crops || []).forEach((crop, i) => {
    const div = document.createElement("div");
    div.className = "crop";
    const link = document.createElement("a");
    link.href = crop.url;
    link.textContent = `zoom-in ${i + 1}`;
    div.appendChild(link);
    const path = document.createElement("span");
    path.className = "path";
    path.textContent = ` ${crop.path}`;
    div.appendChild(path);
    td.appendChild(div);
  });
}

function showBadges(camera) {
  const raised = active.get(camera) || new Map();
  for (const holder of document.querySelectorAll(`[data-camera="${CSS.escape(camera)}"]`)) {
    const badges = holder.querySelector(".badges");
    if (!badges) continue;
    badges.textContent = "";
    for (const hazard of new Set(raised.values())) {
      const badge = document.createElement("span");
      badge.className = `badge ${hazard}`;
      badge.textContent = NAMES[hazard] || hazard;
      badges.appendChild(badge);
    }
    holder.classList.toggle("alarm", raised.size > 0);
  }
}

function cell(row, text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  row.appendChild(td);
  return td;
}

function button(label, action, eventId) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = action;
  b.dataset.event = eventId;
  return b;
}

function alertRow(alert) {
  const row = document.createElement("tr");
  row.className = alert.active ? "active" : "ended";
  row.dataset.event = alert.id;
  const badge = document.createElement("span");
  badge.className = `badge ${alert.hazard}`;
  badge.textContent = NAMES[alert.hazard] || alert.hazard;
  const hazardCell = cell(row, badge);
  if (alert.severity === "high") {
    const high = document.createElement("span");
    high.className = "severity high";
    high.textContent = "HIGH";
    hazardCell.appendChild(document.createTextNode(" "));
    hazardCell.appendChild(high);
  }
  const link = document.createElement("a");
  link.href = `/cameras/${encodeURIComponent(alert.camera)}`;
  link.textContent = alert.camera;
  cell(row, link);
  cell(row, alert.started_at);
  let state = alert.active ? "raised" : `ended (${alert.end_reason || "-"})`;
  if (alert.acknowledged_by) state += `, acknowledged by ${alert.acknowledged_by}`;
  cell(row, state, "state");
  const detail = cell(row, alert.detail, "detail");
  if (alert.zones && alert.zones.length) {
    const zones = document.createElement("div");
    zones.className = "zones";
    zones.textContent = `zones: ${alert.zones.join(", ")}`;
    detail.appendChild(zones);
  }
  if (alert.verification) {
    const outcome = document.createElement("div");
    outcome.className = `outcome ${alert.verification.outcome}`;
    outcome.textContent = OUTCOMES[alert.verification.outcome] || alert.verification.outcome;
    detail.appendChild(outcome);
  }
  evidenceCell(row, alert);
  const actions = cell(row, "", "actions");
  if (document.body.dataset.canAct === "yes" && alert.active) {
    actions.appendChild(button("Acknowledge", "ack", alert.id));
    actions.appendChild(document.createTextNode(" "));
    actions.appendChild(button("False alarm", "false_alarm", alert.id));
  }
  return row;
}

function showAlert(alert) {
  const raised = active.get(alert.camera) || new Map();
  if (alert.active) raised.set(alert.id, alert.hazard); else raised.delete(alert.id);
  active.set(alert.camera, raised);
  showBadges(alert.camera);
  const table = document.querySelector("#alerts table.alerts tbody");
  if (!table) return;
  const filter = document.getElementById("alerts").dataset.cameraFilter;
  if (filter && filter !== alert.camera) return;
  const row = alertRow(alert);
  const old = table.querySelector(`tr[data-event="${CSS.escape(alert.id)}"]`);
  if (old) old.replaceWith(row);
  else {
    const empty = table.querySelector("td[colspan]");
    if (empty) empty.parentElement.remove();
    table.prepend(row);
  }
}

async function act(target) {
  const action = target.dataset.action;
  let url, body = {};
  if (action === "missed") {
    url = `/api/cameras/${encodeURIComponent(target.dataset.camera)}/missed`;
    body = { hazard: target.dataset.hazard };
  } else {
    url = `/api/events/${encodeURIComponent(target.dataset.event)}/${action}`;
  }
  target.disabled = true;
  try {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body),
    });
    const text = await response.text();
    let answer = {};
    try { answer = JSON.parse(text); } catch (e) { answer = { error: text }; }
    if (!response.ok) { say(`${action}: ${answer.error || response.status}`, true); return; }
    if (answer.id) showAlert(answer);
    say(action === "missed" ? `saved ${answer.saved}` : `${action}: done`, false);
  } finally {
    target.disabled = false;
  }
}

function follow() {
  const live = document.getElementById("live");
  const stream = new EventSource("/api/stream");
  stream.onopen = () => live && live.classList.add("on");
  stream.onerror = () => live && live.classList.remove("on");
  stream.addEventListener("sample", (e) => showSample(JSON.parse(e.data).sample));
  stream.addEventListener("alert", (e) => showAlert(JSON.parse(e.data).alert));
  stream.addEventListener("health", (e) => {
    for (const [camera, problems] of Object.entries(JSON.parse(e.data).health)) showHealth(camera, problems);
  });
  stream.addEventListener("stream", (e) => {
    const update = JSON.parse(e.data);
    showStream(update.camera, update.stream);
  });
  stream.addEventListener("cameras", () => { if (document.body.dataset.page === "cameras") location.reload(); });
  stream.addEventListener("lost", () => location.reload());
}

async function start() {
  document.addEventListener("click", (e) => {
    const target = e.target.closest("button[data-action]");
    if (target) act(target);
  });
  if (document.body.dataset.page === "login") return;
  try {
    const response = await fetch("/api/cameras", { credentials: "same-origin" });
    if (response.ok) {
      for (const camera of (await response.json()).cameras) {
        active.set(camera.id, new Map(camera.active_alerts.map((a) => [a.id, a.hazard])));
        if (camera.latest) showSample(camera.latest);
        showHealth(camera.id, camera.health);
      }
    }
  } catch (e) { say("cannot reach the daemon", true); }
  follow();
}

document.addEventListener("DOMContentLoaded", start);
