// The /audit page: GET /api/v1/audit (newest first) as a table, each event with the server's sentence for it. The action filter and the limit are asked of the
// server; the actor and target filters narrow the loaded events as you type. The DOM is built with textContent only.

import { api } from "./api.js";
import { announcer } from "./dom.js";


const statusBox = document.getElementById("status");
const form = document.getElementById("audit-filters");
const actionInput = document.getElementById("audit-action");
const actionList = document.getElementById("audit-actions");
const actorInput = document.getElementById("audit-actor");
const targetInput = document.getElementById("audit-target");
const limitSelect = document.getElementById("audit-limit");
const body = document.getElementById("audit-body");
const empty = document.getElementById("audit-empty");
const count = document.getElementById("audit-count");

const actions = new Set(); // every action the server can describe, and any other an event carries
let events = [];

// `label` names the column for narrow screens, where the table header is hidden.
function cell(text, className, label) {
  const td = document.createElement("td");
  td.textContent = text;
  td.className = className;
  td.dataset.label = label;
  return td;
}

const announce = announcer(statusBox);

function utc(seconds) {
  const when = new Date(seconds * 1000);
  return Number.isNaN(when.getTime()) ? "" : when.toISOString().replace("T", " ").slice(0, 19);
}

// The server's sentence for the event; an event from an older sidecar without one reads as its parts.
function sentence(event) {
  return typeof event.text === "string" && event.text ? event.text : `${event.actor} ${event.action} ${event.target}`;
}

function renderActions() {
  actionList.replaceChildren(
    ...[...actions].sort().map((action) => {
      const option = document.createElement("option");
      option.value = action;
      return option;
    }),
  );
}

function render() {
  const actor = actorInput.value.trim().toLowerCase();
  const target = targetInput.value.trim().toLowerCase();
  const shown = events.filter(
    (event) =>
      (!actor || event.actor.toLowerCase().includes(actor)) && (!target || event.target.toLowerCase().includes(target)),
  );
  body.replaceChildren(
    ...shown.map((event) => {
      const row = document.createElement("tr");
      row.dataset.action = event.action;
      const time = cell("", "audit-time", "Time (UTC)");
      const stamp = document.createElement("time");
      stamp.dateTime = new Date(event.ts * 1000).toISOString();
      stamp.textContent = utc(event.ts);
      time.append(stamp);
      row.append(
        time,
        cell(event.actor, "audit-actor", "Actor"),
        cell(event.action, "audit-action", "Action"),
        cell(event.target, "audit-target", "Target"),
        cell(sentence(event), "audit-detail", "What happened"),
      );
      return row;
    }),
  );
  empty.hidden = shown.length > 0;
  count.textContent =
    shown.length === events.length ? `${events.length} event(s).` : `${shown.length} of ${events.length} event(s).`;
}

async function load() {
  const query = new URLSearchParams({ limit: limitSelect.value });
  const action = actionInput.value.trim();
  if (action) {
    query.set("action", action);
  }
  try {
    const found = await api.get(`/api/v1/audit?${query}`);
    events = found.events;
    for (const action of found.actions || []) {
      actions.add(action);
    }
    for (const event of events) {
      actions.add(event.action);
    }
    renderActions();
    render();
  } catch (error) {
    announce(`Could not load the audit log: ${error.message}`, "error");
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});

document.getElementById("audit-clear").addEventListener("click", () => {
  actionInput.value = "";
  actorInput.value = "";
  targetInput.value = "";
  load();
});

actorInput.addEventListener("input", render);
targetInput.addEventListener("input", render);
limitSelect.addEventListener("change", load);

renderActions();
load();
