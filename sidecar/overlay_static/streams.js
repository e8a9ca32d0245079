// The /streams page: live streams from GET /api/v1/streams (polled every 3 s while the tab is visible) with a
// player; for admins also per-stream group toggles, the deciding rule, "preview as", share links, the rules list
// and the stream sources. Everything shown comes from the JSON API; the DOM is built with textContent only.

import { api } from "./api.js";
import { announcer, el } from "./dom.js";
import { attachPlayer } from "./player.js";

const POLL_MS = 3000;
const PRIVATE_GROUP = "vid_private";
const SHARE_TTLS = [
  ["1h", "1 hour"],
  ["4h", "4 hours"],
  ["24h", "24 hours"],
  ["never", "Never expires"],
];

const app = document.getElementById("streams-app");
const isAdmin = app.dataset.isAdmin === "true";
const canShare = isAdmin || app.dataset.viewerShareLinks === "true";
const statusBox = document.getElementById("status");
const list = document.getElementById("stream-list");

const items = new Map(); // stream path → its rendered item
let groups = []; // every vid_* group (admins only)
let shareLinks = [];
let player = null;

// --- small helpers ----------------------------------------------------------------------------------------------

const announce = announcer(statusBox);

function fail(prefix, error) {
  announce(prefix ? `${prefix}: ${error.message}` : error.message, "error");
}

function encodePath(path) {
  return path
    .split("/")
    .map((part) => encodeURIComponent(part))
    .join("/");
}

function visibilityText(groupNames) {
  return groupNames.length ? groupNames.join(", ") : "admins only";
}

function visibilityMessage(pattern, groupNames) {
  return `${pattern} is now visible to ${visibilityText(groupNames)}`;
}

function groupCheckboxes(container, name, checked) {
  const boxes = container.querySelector(".toggle-list") || container.appendChild(el("div", { class: "toggle-list" }));
  boxes.replaceChildren(
    ...groups.map((group) =>
      el(
        "label",
        { class: "toggle" },
        el("input", { type: "checkbox", class: "group-toggle", name, value: group, checked: checked.includes(group) }),
        el("span", { text: group }),
      ),
    ),
  );
  if (!groups.length) {
    boxes.append(el("p", { class: "muted", text: "No groups exist yet." }));
  }
}

function checkedGroups(container) {
  return [...container.querySelectorAll("input.group-toggle:checked")].map((box) => box.value);
}

function expiryText(expiresAt) {
  if (expiresAt === null || expiresAt === undefined || expiresAt === "" || expiresAt === 0) {
    return "never expires";
  }
  const when = typeof expiresAt === "number" ? new Date(expiresAt * 1000) : new Date(expiresAt);
  return Number.isNaN(when.getTime()) ? `expires ${expiresAt}` : `expires ${when.toLocaleString()}`;
}

// --- the player ---------------------------------------------------------------------------------------------------

const playerPanel = document.getElementById("player-panel");
const playerVideo = document.getElementById("player");
const playerTitle = document.getElementById("player-title");

function play(path) {
  if (player) {
    player.stop();
  }
  playerPanel.hidden = false;
  playerTitle.textContent = path;
  playerVideo.setAttribute("aria-label", `Video of ${path}`);
  player = attachPlayer(playerVideo, {
    path,
    hlsBase: app.dataset.hlsUrl,
    onStatus: (message, kind) => announce(message, kind === "error" ? "error" : "info"),
  });
  playerPanel.scrollIntoView({ block: "nearest" });
  playerVideo.focus({ preventScroll: true });
}

document.getElementById("player-stop").addEventListener("click", () => {
  const playing = player;
  player = null;
  if (playing) {
    playing.stop();
    const item = items.get(playing.path);
    if (item) {
      item.playButton.focus();
    }
  }
  playerPanel.hidden = true;
});

// --- one stream ---------------------------------------------------------------------------------------------------

function ruleText(stream) {
  const rule = stream.rule;
  if (!rule) {
    return "No rule matches this path: admins only.";
  }
  const who = visibilityText(rule.groups);
  if (stream.exact_rule) {
    return `Decided by its own rule ${rule.pattern} → ${who}.`;
  }
  return `Decided by the broader pattern ${rule.pattern} → ${who}. A toggle here adds a rule for this path only.`;
}

function buildAdminPanel(item) {
  const { path } = item;
  const visibility = el(
    "fieldset",
    { class: "visibility group-toggles" },
    el("legend", {}, "Visible to groups", el("span", { class: "visually-hidden", text: ` (${path})` })),
  );
  visibility.addEventListener("change", (event) => {
    if (event.target.matches("input.group-toggle")) {
      saveVisibility(item, () => checkedGroups(visibility));
    }
  });

  const restrict = el("button", {
    type: "button",
    class: "restrict-private secondary",
    text: `Restrict to ${PRIVATE_GROUP} only`,
    "aria-label": `Restrict ${path} to ${PRIVATE_GROUP} only`,
  });
  restrict.addEventListener("click", () => {
    for (const box of visibility.querySelectorAll("input.group-toggle")) {
      box.checked = box.value === PRIVATE_GROUP;
    }
    saveVisibility(item, () => [PRIVATE_GROUP]);
  });

  const clearRule = el("button", {
    type: "button",
    class: "clear-rule secondary",
    text: "Remove this path's rule",
    "aria-label": `Remove the rule for ${path} only`,
    hidden: true,
  });
  clearRule.addEventListener("click", () => removeExactRule(item));

  const ruleInfo = el("p", { class: "rule-info" });

  const previewInput = el("input", {
    class: "preview-input",
    name: "preview",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    placeholder: "bob, or vid_public|vid_private",
  });
  const previewResult = el("p", { class: "preview-result", hidden: true });
  const preview = el(
    "form",
    { class: "preview-form" },
    el(
      "label",
      {},
      "Preview as (a user name, or groups separated by |)",
      el("span", { class: "visually-hidden", text: ` for ${path}` }),
      previewInput,
    ),
    el("button", { type: "submit", class: "preview-button secondary", text: "Preview" }),
    previewResult,
  );
  preview.addEventListener("submit", (event) => {
    event.preventDefault();
    previewAs(item, previewInput.value.trim(), previewResult);
  });

  Object.assign(item, { visibility, restrict, clearRule, ruleInfo });
  return el(
    "div",
    { class: "stream-admin" },
    visibility,
    el("div", { class: "actions" }, restrict, clearRule),
    ruleInfo,
    preview,
  );
}

function buildSharePanel(item) {
  const { path } = item;
  const ttl = el(
    "select",
    { class: "share-ttl", name: "ttl" },
    ...SHARE_TTLS.map(([value, label]) => el("option", { value, text: label })),
  );
  const form = el(
    "form",
    { class: "share-form" },
    el("label", {}, "Share link valid for", el("span", { class: "visually-hidden", text: ` (${path})` }), ttl),
    el("button", { type: "submit", class: "share-create secondary", text: "Create share link" }),
  );
  const url = el("input", { class: "share-url", readOnly: true, "aria-label": `Share link for ${path}` });
  const copy = el("button", { type: "button", class: "share-copy secondary", text: "Copy link" });
  const result = el("div", { class: "share-result", hidden: true }, url, copy);
  const links = el("ul", { class: "share-links", "aria-label": `Share links for ${path}` });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    createShareLink(item, ttl.value);
  });
  copy.addEventListener("click", () => copyLink(url));
  Object.assign(item, { shareCreate: form.querySelector(".share-create"), shareResult: result, shareUrl: url });
  item.shareList = links;
  return el("div", { class: "stream-share" }, form, result, links);
}

function createItem(stream) {
  const path = stream.name;
  const item = { path, pending: 0, queue: Promise.resolve(), stream };
  const state = el("span", { class: "stream-state" });
  const readers = el("span", { class: "stream-readers" });
  const playButton = el("button", { type: "button", class: "play-button", text: "Play", "aria-label": `Play ${path}` });
  playButton.addEventListener("click", () => play(path));
  Object.assign(item, { state, readers, playButton });

  const root = el(
    "li",
    { class: "stream card", "data-path": path },
    el(
      "div",
      { class: "stream-head" },
      el("h3", { class: "stream-name", text: path }),
      el("span", { class: "stream-facts" }, state, readers),
      playButton,
    ),
  );
  if (isAdmin) {
    root.append(buildAdminPanel(item));
  }
  if (canShare) {
    root.append(buildSharePanel(item));
  }
  item.root = root;
  updateItem(item, stream, true);
  renderShareLinks(item);
  return item;
}

function updateItem(item, stream, rebuildToggles = false) {
  item.stream = stream;
  item.root.dataset.ready = stream.ready ? "true" : "false";
  item.state.textContent = stream.ready ? "Live" : "Not ready";
  item.state.dataset.ready = stream.ready ? "true" : "false";
  const count = Number(stream.readers) || 0;
  item.readers.textContent = `${count} ${count === 1 ? "viewer" : "viewers"}`;
  if (!isAdmin) {
    return;
  }
  const effective = stream.rule ? stream.rule.groups : [];
  if (rebuildToggles) {
    groupCheckboxes(item.visibility, `visible-${item.path}`, effective);
  } else if (item.pending === 0) {
    // Only when no change of ours is on its way, so a poll never flips a box the admin just ticked.
    for (const box of item.visibility.querySelectorAll("input.group-toggle")) {
      box.checked = effective.includes(box.value);
    }
  }
  item.root.dataset.rule = stream.rule ? stream.rule.pattern : "";
  item.root.dataset.exactRule = stream.exact_rule ? "true" : "false";
  item.ruleInfo.textContent = ruleText(stream);
  item.clearRule.hidden = !stream.exact_rule;
  item.restrict.hidden = !groups.includes(PRIVATE_GROUP);
}

// --- admin actions on one stream --------------------------------------------------------------------------------

// Changes to one path are sent one after another, each with the boxes as they are when it is sent.
function saveVisibility(item, chosenGroups) {
  item.pending += 1;
  item.root.dataset.saving = "true";
  item.queue = item.queue.then(async () => {
    try {
      const saved = await api.put("/api/v1/rules", { pattern: item.path, groups: chosenGroups() });
      announce(visibilityMessage(saved.pattern, saved.groups));
    } catch (error) {
      fail(`${item.path} was not changed`, error);
    } finally {
      item.pending -= 1;
      if (item.pending === 0) {
        delete item.root.dataset.saving;
      }
    }
    await Promise.all([refreshStreams(), loadRules()]);
  });
  return item.queue;
}

async function removeExactRule(item) {
  try {
    await api.delete(`/api/v1/rules?pattern=${encodeURIComponent(item.path)}`);
    announce(`${item.path} no longer has its own rule; the broader rules decide again`);
  } catch (error) {
    fail(`The rule for ${item.path} was not removed`, error);
  }
  await Promise.all([refreshStreams(), loadRules()]);
  if (item.root.isConnected) {
    (item.visibility.querySelector("input") || item.playButton).focus();
  }
}

async function previewAs(item, value, output) {
  if (!value) {
    announce("Preview as: enter a user name, or groups separated by |", "error");
    return;
  }
  const params = new URLSearchParams({ path: item.path, action: "read" });
  const asGroups = value.includes("|") || groups.includes(value);
  params.set(asGroups ? "groups" : "user", value);
  try {
    const result = await api.get(`/api/v1/explain?${params}`);
    const who = asGroups ? `groups ${value}` : result.user || value;
    const text = `${result.allowed ? "Allowed" : "Denied"} for ${who} on ${item.path}: ${result.reason}`;
    output.textContent = text;
    output.dataset.allowed = result.allowed ? "true" : "false";
    output.hidden = false;
    announce(text);
  } catch (error) {
    output.textContent = error.message;
    output.dataset.allowed = "error";
    output.hidden = false;
    fail(`Preview as ${value}`, error);
  }
}

// --- share links ----------------------------------------------------------------------------------------------

function linksOf(body) {
  if (Array.isArray(body)) {
    return body;
  }
  return body.share_links || body.links || [];
}

async function loadShareLinks() {
  if (!canShare) {
    return;
  }
  try {
    shareLinks = linksOf(await api.get("/api/v1/share-links"));
  } catch (error) {
    fail("Share links could not be loaded", error);
    return;
  }
  for (const item of items.values()) {
    renderShareLinks(item);
  }
}

// The API never shows a link's URL again after creating it: the list says who made it, until when, and how often
// it was used.
function renderShareLinks(item) {
  if (!item.shareList) {
    return;
  }
  const now = Date.now() / 1000;
  const mine = shareLinks.filter((link) => link.path === item.path && !link.revoked);
  item.shareList.replaceChildren(
    ...mine.map((link) => {
      const expired = typeof link.expires_at === "number" && link.expires_at <= now;
      const uses = Number(link.uses) || 0;
      const facts = [
        link.created_by ? `by ${link.created_by}` : "",
        expired ? "expired" : expiryText(link.expires_at),
        `used ${uses} ${uses === 1 ? "time" : "times"}`,
      ].filter(Boolean);
      const revoke = el("button", {
        type: "button",
        class: "share-revoke secondary",
        text: "Revoke",
        "aria-label": `Revoke share link for ${item.path} (${facts.join(", ")})`,
      });
      revoke.addEventListener("click", () => revokeShareLink(item, link));
      return el(
        "li",
        { class: "share-link", "data-id": link.id },
        el("span", { class: "share-link-facts", text: `Share link ${facts.join(" · ")}` }),
        expired ? null : revoke,
      );
    }),
  );
}

async function createShareLink(item, ttl) {
  try {
    const link = await api.post("/api/v1/share-links", { path: item.path, ttl });
    const href = new URL(link.url || "", window.location.href).href;
    item.shareUrl.value = href;
    item.shareResult.hidden = false;
    item.shareUrl.focus();
    item.shareUrl.select();
    announce(`Share link for ${item.path} created (${expiryText(link.expires_at)})`);
  } catch (error) {
    fail(`No share link for ${item.path}`, error);
    return;
  }
  await loadShareLinks();
}

async function copyLink(input) {
  try {
    await navigator.clipboard.writeText(input.value);
    announce("Link copied");
  } catch {
    input.focus();
    input.select();
    announce("Copying is blocked here: the link is selected, copy it with Ctrl+C or ⌘C", "error");
  }
}

async function revokeShareLink(item, link) {
  try {
    await api.delete(`/api/v1/share-links/${encodeURIComponent(link.id)}`);
    announce(`Share link for ${item.path} revoked`);
  } catch (error) {
    fail("The share link was not revoked", error);
  }
  await loadShareLinks();
  item.shareCreate.focus();
}

// --- the stream list and its polling ------------------------------------------------------------------------------

function setGroups(next) {
  const changed = next.length !== groups.length || next.some((group, index) => group !== groups[index]);
  if (!changed) {
    return;
  }
  groups = next;
  for (const item of items.values()) {
    updateItem(item, item.stream, true);
  }
  const ruleGroups = document.getElementById("rule-groups");
  if (ruleGroups) {
    groupCheckboxes(ruleGroups, "rule-group", checkedGroups(ruleGroups));
  }
}

function renderStreams(streams) {
  document.getElementById("streams-loading").hidden = true;
  document.getElementById("streams-empty").hidden = streams.length > 0;
  const sorted = [...streams].sort((a, b) => a.name.localeCompare(b.name));
  const seen = new Set(sorted.map((stream) => stream.name));
  for (const [path, item] of items) {
    if (!seen.has(path)) {
      item.root.remove();
      items.delete(path);
    }
  }
  sorted.forEach((stream, index) => {
    let item = items.get(stream.name);
    if (item) {
      updateItem(item, stream);
    } else {
      item = createItem(stream);
      items.set(stream.name, item);
    }
    // Move nodes only when out of place: moving the node that holds focus would drop it.
    if (list.children[index] !== item.root) {
      list.insertBefore(item.root, list.children[index] || null);
    }
  });
}

let pollTimer = null;
let pollStopped = false;
let pollError = "";
let loading = null;
let again = false;

async function loadStreamsOnce() {
  let body;
  try {
    body = await api.get("/api/v1/streams");
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      pollStopped = true; // signed out or no longer in a vid_* group: polling would only repeat the refusal
    }
    if (error.message !== pollError) {
      pollError = error.message;
      fail("Streams could not be loaded", error);
    }
    return;
  }
  if (pollError) {
    pollError = "";
    announce("Streams are up to date again");
  }
  if (isAdmin) {
    if (Array.isArray(body.groups)) {
      setGroups(body.groups); // else the directory could not say: the toggles keep the groups known so far
    }
    if (body.groups_error && body.groups_error !== groupsError) {
      announce(`Note: ${body.groups_error}`, "error");
    }
    groupsError = body.groups_error || "";
  }
  renderStreams(Array.isArray(body.streams) ? body.streams : []);
}

let groupsError = ""; // the directory's last complaint about the group list, announced once

// One request at a time; a refresh asked for during one runs once more right after it.
function refreshStreams() {
  if (loading) {
    again = true;
    return loading;
  }
  loading = (async () => {
    try {
      do {
        again = false;
        await loadStreamsOnce();
      } while (again);
    } finally {
      loading = null;
    }
  })();
  return loading;
}

function schedulePoll() {
  window.clearTimeout(pollTimer);
  if (!pollStopped && !document.hidden) {
    pollTimer = window.setTimeout(poll, POLL_MS);
  }
}

async function poll() {
  await refreshStreams();
  schedulePoll();
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    window.clearTimeout(pollTimer);
  } else {
    poll();
  }
});

// --- rules (admins) -----------------------------------------------------------------------------------------------

async function loadRules() {
  const body = document.getElementById("rules-body");
  if (!body) {
    return;
  }
  let rules;
  try {
    rules = (await api.get("/api/v1/rules")).rules || [];
  } catch (error) {
    fail("Rules could not be loaded", error);
    return;
  }
  body.replaceChildren(
    ...rules.map((rule) => {
      const remove = el("button", {
        type: "button",
        class: "rule-delete secondary",
        text: "Delete",
        "aria-label": `Delete rule ${rule.pattern}`,
      });
      remove.addEventListener("click", () => deleteRule(rule.pattern));
      const chips = rule.groups.length
        ? rule.groups.map((group) => el("span", { class: "chip", text: group }))
        : [el("em", { text: "admins only" })];
      return el(
        "tr",
        { class: "rule-row", "data-pattern": rule.pattern },
        el("td", {}, el("code", { text: rule.pattern })),
        el("td", {}, ...chips),
        el("td", {}, remove),
      );
    }),
  );
  if (!rules.length) {
    body.append(el("tr", {}, el("td", { colSpan: 3, text: "No rules yet: only admins see any stream." })));
  }
}

async function deleteRule(pattern) {
  try {
    await api.delete(`/api/v1/rules?pattern=${encodeURIComponent(pattern)}`);
    announce(`Rule ${pattern} deleted`);
  } catch (error) {
    fail(`Rule ${pattern} was not deleted`, error);
  }
  await Promise.all([loadRules(), refreshStreams()]);
  document.getElementById("rule-pattern").focus();
}

function setUpRuleForm() {
  const form = document.getElementById("rule-form");
  if (!form) {
    return;
  }
  groupCheckboxes(document.getElementById("rule-groups"), "rule-group", []);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const pattern = document.getElementById("rule-pattern").value.trim();
    try {
      const saved = await api.put("/api/v1/rules", { pattern, groups: checkedGroups(form) });
      announce(visibilityMessage(saved.pattern, saved.groups));
      form.reset();
    } catch (error) {
      fail(`Rule ${pattern} was not saved`, error);
      return;
    }
    await Promise.all([loadRules(), refreshStreams()]);
  });
}

// --- stream sources (admins) --------------------------------------------------------------------------------------

let editing = null; // the name of the source being edited, or null when adding

async function loadSources() {
  const body = document.getElementById("sources-body");
  if (!body) {
    return;
  }
  const note = document.getElementById("sources-note");
  let sources;
  try {
    sources = (await api.get("/api/v1/sources")).sources || [];
  } catch (error) {
    note.textContent = error.message;
    note.hidden = false;
    body.replaceChildren();
    return;
  }
  note.hidden = true;
  body.replaceChildren(
    ...sources.map((source) => {
      const edit = el("button", {
        type: "button",
        class: "source-edit secondary",
        text: "Edit",
        "aria-label": `Edit source ${source.name}`,
      });
      edit.addEventListener("click", () => editSource(source));
      const remove = el("button", {
        type: "button",
        class: "source-delete secondary",
        text: "Delete",
        "aria-label": `Delete source ${source.name}`,
      });
      remove.addEventListener("click", () => deleteSource(source.name));
      return el(
        "tr",
        { class: "source-row", "data-name": source.name },
        el("td", {}, el("code", { text: source.name })),
        el("td", { class: "source-url-cell" }, el("code", { text: source.source || "" })),
        el("td", { text: source.source_on_demand ? "yes" : "no" }),
        el("td", { class: "row-actions" }, edit, remove),
      );
    }),
  );
  if (!sources.length) {
    body.append(el("tr", {}, el("td", { colSpan: 4, text: "No stream sources configured." })));
  }
}

function sourceFormMode(source) {
  const name = document.getElementById("source-name");
  editing = source ? source.name : null;
  name.readOnly = Boolean(source);
  document.getElementById("source-form-title").textContent = source ? `Edit source ${source.name}` : "Add source";
  document.getElementById("source-submit").textContent = source ? "Save changes" : "Add source";
  document.getElementById("source-cancel").hidden = !source;
  if (source) {
    name.value = source.name;
    document.getElementById("source-url").value = source.source || "";
    document.getElementById("source-on-demand").checked = Boolean(source.source_on_demand);
  } else {
    document.getElementById("source-form").reset();
  }
}

function editSource(source) {
  sourceFormMode(source);
  const input = document.getElementById("source-url");
  input.focus();
  input.select();
}

async function deleteSource(name) {
  try {
    await api.delete(`/api/v1/sources/${encodePath(name)}`);
    announce(`Source ${name} removed`);
    if (editing === name) {
      sourceFormMode(null);
    }
  } catch (error) {
    fail(`Source ${name} was not removed`, error);
  }
  await Promise.all([loadSources(), refreshStreams()]);
  document.getElementById("source-name").focus();
}

function setUpSourceForm() {
  const form = document.getElementById("source-form");
  if (!form) {
    return;
  }
  document.getElementById("source-cancel").addEventListener("click", () => {
    const name = editing;
    sourceFormMode(null);
    const row = name && document.querySelector(`#sources-body tr[data-name="${CSS.escape(name)}"] .source-edit`);
    (row || document.getElementById("source-name")).focus();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = document.getElementById("source-name").value.trim();
    const change = {
      source: document.getElementById("source-url").value.trim(),
      source_on_demand: document.getElementById("source-on-demand").checked,
    };
    try {
      if (editing) {
        await api.patch(`/api/v1/sources/${encodePath(editing)}`, change);
        announce(`Source ${editing} saved`);
      } else {
        await api.post("/api/v1/sources", { name, ...change });
        announce(`Source ${name} added`);
      }
    } catch (error) {
      fail(`Source ${editing || name} was not saved`, error);
      return;
    }
    sourceFormMode(null);
    await Promise.all([loadSources(), refreshStreams()]);
  });
}

// --- start ----------------------------------------------------------------------------------------------------

setUpRuleForm();
setUpSourceForm();
poll();
loadShareLinks();
if (isAdmin) {
  loadRules();
  loadSources();
}
