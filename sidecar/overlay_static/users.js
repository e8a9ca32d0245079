// The /users page: people from GET /api/v1/users (search and paging), each with one toggle per group from
// GET /api/v1/groups, activate/deactivate, a password-reset email and a one-time recovery link; and the groups
// with member counts and a form to create one; the access requests section lives in requests.js. Everything shown
// comes from the JSON API; the DOM is built with textContent only.

import { api } from "./api.js";
import { announcer, el } from "./dom.js";
import { setupRequests } from "./requests.js";

const PAGE_SIZE = 25;

const app = document.getElementById("users-app");
const mode = app.dataset.mode;
const prefix = app.dataset.prefix || "vid_";
const statusBox = document.getElementById("status");
const note = document.getElementById("membership-note");
const list = document.getElementById("user-list");
const loading = document.getElementById("users-loading");
const empty = document.getElementById("users-empty");
const pager = document.getElementById("users-pager");
const prev = document.getElementById("users-prev");
const next = document.getElementById("users-next");
const pageInfo = document.getElementById("users-page-info");
const searchForm = document.getElementById("user-search");
const searchInput = document.getElementById("user-search-input");
const groupsBody = document.getElementById("groups-body");
const groupsEmpty = document.getElementById("groups-empty");
const groupForm = document.getElementById("group-form");
const groupName = document.getElementById("group-name");

const MEMBERSHIP_NOTE = "Takes effect at the person's next request; live streams that lost access were stopped.";

let groups = []; // every group with the prefix: {name, member_count}
let search = "";
let page = 1;
let total = 0;

// --- small helpers ----------------------------------------------------------------------------------------------

const announce = announcer(statusBox);

function fail(prefixText, error) {
  announce(`${prefixText}: ${error.message}`, "error");
}

function userUrl(username, rest = "") {
  return `/api/v1/users/${encodeURIComponent(username)}${rest}`;
}

// --- people -------------------------------------------------------------------------------------------------------

function groupToggles(user) {
  const mine = new Set(user.groups);
  const fieldset = el("fieldset", { class: "group-toggles" }, el("legend", { text: "Stream groups" }));
  const toggles = el("div", { class: "toggle-list" });
  if (!groups.length) {
    toggles.append(el("p", { class: "muted", text: `No groups starting with ${prefix} yet.` }));
  }
  for (const group of groups) {
    const box = el("input", {
      type: "checkbox",
      class: "group-toggle",
      checked: mine.has(group.name),
      "data-group": group.name,
      "data-username": user.username,
    });
    box.addEventListener("change", () => changeMembership(user, box));
    toggles.append(el("label", { class: "toggle" }, box, el("span", { text: group.name })));
  }
  fieldset.append(toggles);
  return fieldset;
}

function userItem(user) {
  const state = el("span", {
    class: "user-state",
    "data-active": user.is_active ? "true" : "false",
    text: user.is_active ? "active" : "inactive",
  });
  const facts = [user.name, user.email].filter(Boolean).join(" · ");
  const activate = el("button", {
    type: "button",
    class: "secondary user-activate",
    text: user.is_active ? "Deactivate" : "Activate",
  });
  activate.addEventListener("click", () => setActive(user, !user.is_active, activate));
  // Account actions are offered only where the server would allow them: never for directory administrators, and
  // for people also in groups outside the prefix (TAK users) only to directory administrators.
  const accountActions = user.account_actions !== false;
  const accountNote = accountActions ? null : el("p", { class: "account-note muted", text: user.account_note });
  // Password recovery is Authentik's; local mode has none, so it offers no buttons that could only fail.
  const recovery = [];
  let linkBox = null;
  if (mode === "authentik" && accountActions) {
    const email = el("button", { type: "button", class: "secondary user-reset-email", text: "Send password-reset email" });
    email.addEventListener("click", () => sendResetEmail(user, email));
    const link = el("button", { type: "button", class: "secondary user-recovery-link", text: "Copy recovery link" });
    linkBox = el("div", { class: "recovery-result", hidden: true });
    link.addEventListener("click", () => copyRecoveryLink(user, link, linkBox));
    recovery.push(email, link);
  }
  return el(
    "li",
    { class: "card user-card", "data-username": user.username },
    el("div", { class: "user-head" }, el("h3", { class: "user-name", text: user.username }), state),
    facts ? el("p", { class: "user-facts muted", text: facts }) : null,
    groupToggles(user),
    accountActions ? el("div", { class: "actions" }, activate, ...recovery) : accountNote,
    linkBox,
  );
}

function render(found) {
  total = found.total;
  loading.hidden = true;
  list.replaceChildren(...found.users.map(userItem));
  empty.hidden = found.users.length > 0;
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
  pager.hidden = total <= PAGE_SIZE && page === 1;
  pageInfo.textContent = `Page ${page} of ${pages} · ${total} ${total === 1 ? "person" : "people"}`;
  prev.disabled = page <= 1;
  next.disabled = page >= pages;
}

async function loadUsers() {
  const query = new URLSearchParams({ search, page: String(page), page_size: String(PAGE_SIZE) });
  try {
    render(await api.get(`/api/v1/users?${query}`));
  } catch (error) {
    loading.hidden = true;
    fail("Could not load people", error);
  }
}

async function changeMembership(user, box) {
  const group = box.dataset.group;
  const member = box.checked;
  box.disabled = true;
  try {
    const url = userUrl(user.username, `/groups/${encodeURIComponent(group)}`);
    await (member ? api.put(url) : api.delete(url));
    user.groups = member ? [...user.groups, group] : user.groups.filter((name) => name !== group);
    announce(`${user.username} ${member ? "added to" : "removed from"} ${group}. ${MEMBERSHIP_NOTE}`);
    note.textContent = MEMBERSHIP_NOTE;
    note.hidden = false;
    loadGroups(false);
  } catch (error) {
    box.checked = !member;
    fail(`Could not change ${user.username}'s groups`, error);
  } finally {
    box.disabled = false;
  }
}

async function setActive(user, active, button) {
  button.disabled = true;
  try {
    await api.patch(userUrl(user.username), { is_active: active });
    user.is_active = active;
    const item = button.closest(".user-card");
    item.replaceWith(userItem(user));
    list.querySelector(`.user-card[data-username="${CSS.escape(user.username)}"] .user-activate`)?.focus();
    announce(
      active
        ? `${user.username} is active again.`
        : `${user.username} is deactivated; their live streams were stopped.`,
    );
  } catch (error) {
    button.disabled = false;
    fail(`Could not ${active ? "activate" : "deactivate"} ${user.username}`, error);
  }
}

async function sendResetEmail(user, button) {
  button.disabled = true;
  try {
    await api.post(userUrl(user.username, "/recovery-email"), {});
    announce(`Password-reset email sent to ${user.username}${user.email ? ` (${user.email})` : ""}.`);
  } catch (error) {
    fail(`Could not send ${user.username} a reset email`, error);
  } finally {
    button.disabled = false;
  }
}

async function copyRecoveryLink(user, button, box) {
  button.disabled = true;
  try {
    const { link } = await api.post(userUrl(user.username, "/recovery-link"), {});
    const field = el("input", {
      class: "recovery-url",
      value: link,
      readonly: true,
      "aria-label": `One-time recovery link for ${user.username}`,
    });
    box.replaceChildren(field);
    box.hidden = false;
    try {
      await navigator.clipboard.writeText(link);
      announce(`One-time recovery link for ${user.username} copied. Send it to them privately.`);
    } catch {
      field.focus();
      field.select();
      announce(`One-time recovery link for ${user.username} is shown below: copy it and send it privately.`);
    }
  } catch (error) {
    fail(`Could not make a recovery link for ${user.username}`, error);
  } finally {
    button.disabled = false;
  }
}

// --- groups -------------------------------------------------------------------------------------------------------

function renderGroups() {
  groupsBody.replaceChildren(
    ...groups.map((group) =>
      el(
        "tr",
        { "data-group": group.name },
        el("td", { "data-label": "Group" }, el("code", { text: group.name })),
        el("td", { class: "member-count", "data-label": "Members", text: String(group.member_count) }),
      ),
    ),
  );
  groupsEmpty.hidden = groups.length > 0;
}

async function loadGroups(refreshUsers) {
  try {
    const found = await api.get("/api/v1/groups");
    groups = found.groups.filter((group) => group.name.startsWith(prefix));
    renderGroups();
    accessRequests.setGroups(groups.map((group) => group.name));
    if (refreshUsers) {
      await loadUsers();
    }
  } catch (error) {
    fail("Could not load groups", error);
    if (refreshUsers) {
      await loadUsers();
    }
  }
}

groupForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = groupName.value.trim();
  const button = document.getElementById("group-submit");
  button.disabled = true;
  try {
    const answer = await api.post("/api/v1/groups", { name });
    announce(answer.created ? `Group ${name} created.` : `Group ${name} already exists.`);
    groupName.value = prefix;
    await loadGroups(true);
  } catch (error) {
    fail("Could not create the group", error);
    groupName.focus();
  } finally {
    button.disabled = false;
  }
});

// --- search and paging --------------------------------------------------------------------------------------------

searchForm.addEventListener("submit", (event) => {
  event.preventDefault();
  search = searchInput.value.trim().slice(0, 100);
  page = 1;
  loadUsers();
});

prev.addEventListener("click", () => {
  if (page > 1) {
    page -= 1;
    loadUsers();
  }
});

next.addEventListener("click", () => {
  if (page * PAGE_SIZE < total) {
    page += 1;
    loadUsers();
  }
});

const accessRequests = setupRequests({ el, announce, fail, onApproved: () => loadGroups(true) });

loadGroups(true);
accessRequests.load();
