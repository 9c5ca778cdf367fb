// Switchboard ops dashboard: plain JS, no build step. Every call goes to this page's own server, which
// SigV4-signs it for the management API (docs/contracts.md §8); the per-run token proves it came from here.
"use strict";

const TOKEN = document.querySelector('meta[name="switchboard-token"]').content;
const TERMINAL = new Set(["completed", "cancelled", "canceled", "failed"]);
const REFRESH_MS = 5000;
const expanded = new Set(); // group keys whose sample jobs are shown
const busy = new Set(); // group keys with a dry run or redrive under way: not redrawn under the operator

async function api(method, path, body) {
  const init = { method, headers: { "X-Switchboard-Token": TOKEN } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch("/api" + path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok && !(path === "/health" && response.status === 503)) {
    const error = (data && data.error) || {};
    throw new Error(`${response.status} ${error.code || ""}: ${error.message || "request failed"}`);
  }
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.floor(seconds);
  if (s >= 86400) return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${s}s`;
}

function when(value) {
  const date = value ? new Date(value) : null;
  if (!date || isNaN(date)) return value || "-";
  return date.toISOString().slice(0, 19).replace("T", " ") + " UTC";
}

function showError(error) {
  const box = document.getElementById("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

function databaseLine(db) {
  if (!db) return "database: ?";
  if (db.reachable === false) return "database: unreachable";
  if ("at_head" in db) return `database: reachable, schema ${db.revision} (${db.at_head ? "at head" : "not at head " + db.head})`;
  return "database: " + Object.entries(db).map(([k, v]) => `${k}=${v}`).join(", ");
}

function renderHealth(health) {
  const badge = document.getElementById("status");
  badge.textContent = health.status;
  badge.dataset.status = health.status;
  document.getElementById("database").textContent = databaseLine(health.database);
  const body = document.querySelector("#queues tbody");
  body.replaceChildren();
  for (const [jobType, q] of Object.entries(health.queues || {}).sort()) {
    const dlq = q.dlq || {};
    body.append(
      el("tr", { "data-job-type": jobType, title: (q.problems || []).join("; ") },
        el("td", {}, jobType),
        el("td", { class: "num" }, q.visible ?? "-"),
        el("td", { class: "num" }, q.in_flight ?? "-"),
        el("td", { class: "num" }, q.delayed ?? "-"),
        el("td", { class: "num" }, age(q.oldest_age_seconds)),
        el("td", { class: dlq.visible ? "num alert dlq" : "num dlq" }, dlq.visible ?? "-"),
        el("td", { class: "num" }, age(dlq.oldest_age_seconds)),
        el("td", {}, q.event_source ?? "-"),
        el("td", {}, el("span", { class: "badge", "data-status": q.status || "" }, q.status || "-"))));
  }
}

function groupKey(g) {
  return [g.job_type, g.error_class, g.reason].join("|");
}

function renderFailures(data) {
  const groups = (data.groups || []).slice().sort((a, b) => String(b.last_seen).localeCompare(String(a.last_seen)));
  const body = document.querySelector("#failures tbody");
  const keep = new Map();
  for (const row of body.querySelectorAll("tr.group")) {
    if (busy.has(row.dataset.key)) keep.set(row.dataset.key, row.querySelector("td.redrive"));
  }
  body.replaceChildren();
  document.getElementById("no-failures").hidden = groups.length > 0;
  for (const g of groups) {
    const key = groupKey(g);
    // the cell's own clicks (dry run, confirm) must not also open or close the group
    const action = keep.get(key) || el("td", { class: "redrive", onclick: (e) => e.stopPropagation() }, redriveButton(g));
    const row = el("tr", {
      class: "group", "data-key": key, "data-job-type": g.job_type, "data-error-class": g.error_class,
      "data-reason": g.reason, onclick: (event) => {
        if (event.target.closest("td.redrive")) return;
        if (expanded.has(key)) expanded.delete(key); else expanded.add(key);
        renderFailures(data);
      },
    },
      el("td", {}, g.job_type), el("td", {}, g.error_class), el("td", {}, g.reason),
      el("td", { class: "num count" }, g.count), el("td", {}, when(g.last_seen)),
      el("td", {}, g.latest_detail || ""), action);
    body.append(row);
    if (expanded.has(key)) {
      const ids = (g.sample_job_ids || []).join("\n") || "(no job ids recorded)";
      body.append(el("tr", { class: "samples", "data-key": key },
        el("td", { colspan: 7 }, `first seen ${when(g.first_seen)}; sample jobs:`, el("pre", {}, ids))));
    }
  }
}

function redriveButton(g) {
  return el("button", { type: "button", class: "dry-run", onclick: () => dryRun(g) }, "Redrive…");
}

function request(g, dryRun) {
  return { job_type: g.job_type, filter: { error_class: g.error_class, reason: g.reason }, dry_run: dryRun };
}

function cellOf(g) {
  return document.querySelector(`#failures tr.group[data-key="${CSS.escape(groupKey(g))}"] td.redrive`);
}

async function dryRun(g) {
  const key = groupKey(g);
  busy.add(key);
  const cell = cellOf(g);
  cell.replaceChildren(el("span", { class: "muted" }, "counting…"));
  try {
    const result = await api("POST", "/redrive", request(g, true));
    const matched = result.matched ?? 0;
    if (!matched) {
      cell.replaceChildren(el("span", { class: "matched", "data-matched": 0 }, "0 in the DLQ"));
      busy.delete(key);
      return;
    }
    cell.replaceChildren(
      el("span", { class: "matched", "data-matched": matched }, `${matched} match `),
      el("button", { type: "button", class: "confirm", onclick: () => redrive(g, cell, matched) },
        `Redrive ${matched}`),
      " ",
      el("button", { type: "button", class: "cancel", onclick: () => { busy.delete(key); refresh(); } }, "Cancel"));
  } catch (error) {
    busy.delete(key);
    cell.replaceChildren(redriveButton(g));
    showError(error);
  }
}

async function redrive(g, cell, matched) {
  const key = groupKey(g);
  const bar = el("progress", { max: matched, value: 0 });
  const label = el("span", { class: "progress-label" }, "starting…");
  cell.replaceChildren(bar, " ", label);
  try {
    let state = await api("POST", "/redrive", request(g, false));
    const id = state.redrive_id;
    while (!TERMINAL.has(String(state.status).toLowerCase())) {
      bar.value = state.moved || 0;
      label.textContent = `${state.moved || 0} / ${matched} moved`;
      await new Promise((resolve) => setTimeout(resolve, 500));
      state = await api("GET", "/redrives/" + encodeURIComponent(id));
    }
    bar.value = state.moved || 0;
    label.textContent = `${String(state.status).toLowerCase()}: moved ${state.moved || 0}, kept ` +
      `${state.kept || 0}, failed ${state.failed || 0}`;
    label.dataset.status = String(state.status).toLowerCase();
    label.classList.add("redrive-done");
  } catch (error) {
    showError(error);
  } finally {
    busy.delete(key);
    setTimeout(refresh, 1500);
  }
}

async function refresh() {
  try {
    const [health, failures] = await Promise.all([api("GET", "/health"), api("GET", "/failures")]);
    renderHealth(health);
    renderFailures(failures);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
    showError(null);
  } catch (error) {
    showError(error);
  }
}

document.getElementById("refresh").addEventListener("click", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
