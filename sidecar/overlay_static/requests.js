// The "Access requests" section of /users: pending requests from GET /api/v1/access-requests, each with group
// checkboxes (the requested group pre-ticked), Approve, and Reject with an optional message; decided requests below.
// After an approval the answer is shown as is: in local mode without mail, the one-time set-password link to copy.

import { api } from "./api.js";
import { showPending } from "./nav.js";

const STATUS_TEXT = { pending: "pending", approving: "being approved", approved: "approved", rejected: "rejected" };

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

// el, announce and fail come from users.js; onApproved runs after an account was created (people and groups).
export function setupRequests({ el, announce, fail, onApproved }) {
  const list = document.getElementById("request-list");
  const decidedList = document.getElementById("decided-list");
  const decidedHeading = document.getElementById("decided-heading");
  const loading = document.getElementById("requests-loading");
  const empty = document.getElementById("requests-empty");
  const count = document.getElementById("requests-count");
  let groupNames = [];
  let requests = [];
  let loaded = false;
  const results = new Map(); // request id → the approval answer, shown on the decided card

  function facts(item) {
    const rows = [
      ["Username", item.username],
      ["Email", `${item.email} (${item.email_confirmed ? "confirmed by the requester" : "not confirmed"})`],
      ["Organisation", item.org || "—"],
      ["Requested group", item.requested_group || "(none: the administrator chooses)"],
      ["Requested", when(item.created_at)],
    ];
    if (item.status !== "pending") {
      rows.push(["Decided", [when(item.decided_at), item.decided_by].filter(Boolean).join(" by ")]);
    }
    if (item.message) {
      rows.push(["Message", item.message]);
    }
    if (item.status === "pending" && item.same_username > 0) {
      // Two strangers may ask for the same name: approving one makes the other fail as "already exists".
      rows.push(["Note", `${item.same_username} other pending request(s) ask for the username ${item.username}`]);
    }
    return el(
      "dl",
      { class: "request-facts" },
      ...rows.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: value })]),
    );
  }

  function head(item) {
    return el(
      "div",
      { class: "user-head" },
      el("h4", { class: "request-name", text: item.name || item.username }),
      el("span", { class: "request-state", "data-status": item.status, text: STATUS_TEXT[item.status] || item.status }),
    );
  }

  function pendingItem(item) {
    const fieldset = el("fieldset", { class: "group-toggles" }, el("legend", { text: "Give access to" }));
    const toggles = el("div", { class: "toggle-list" });
    const names = [...groupNames];
    if (item.requested_group && !names.includes(item.requested_group)) {
      names.push(item.requested_group);
    }
    if (!names.length) {
      toggles.append(el("p", { class: "muted", text: "No stream groups yet: the account gets no streams." }));
    }
    for (const name of names) {
      const box = el("input", {
        type: "checkbox",
        class: "request-group",
        checked: name === item.requested_group,
        "data-group": name,
      });
      toggles.append(el("label", { class: "toggle" }, box, el("span", { text: name })));
    }
    fieldset.append(toggles);
    const approve = el("button", { type: "button", class: "request-approve", text: "Approve" });
    const messageId = `request-message-${item.id}`;
    const message = el("input", {
      id: messageId,
      class: "request-message",
      type: "text",
      maxLength: 2000,
      autocomplete: "off",
    });
    const reject = el("button", { type: "button", class: "secondary request-reject", text: "Reject" });
    const card = el(
      "li",
      { class: "card request-card", "data-id": item.id, "data-username": item.username, "data-status": item.status },
      head(item),
      facts(item),
      el("p", { class: "request-reason", text: item.reason }),
      fieldset,
      el("div", { class: "actions" }, approve),
      el(
        "div",
        { class: "reject-row" },
        el("label", { for: messageId, text: "Message with a rejection (optional)" }),
        el("div", { class: "search-row" }, message, reject),
      ),
    );
    approve.addEventListener("click", () => decide(item, card, "approve"));
    reject.addEventListener("click", () => decide(item, card, "reject"));
    return card;
  }

  function resultBox(item, answer) {
    const box = el("div", { class: "request-result" });
    const granted = answer.groups && answer.groups.length ? answer.groups.join(", ") : "no groups";
    box.append(el("p", { text: `Account ${answer.username} created with ${granted}.` }));
    if (answer.set_password_link) {
      const fieldId = `set-password-link-${item.id}`;
      const field = el("input", {
        id: fieldId,
        class: "recovery-url set-password-link",
        value: answer.set_password_link,
        readonly: true,
      });
      const copy = el("button", { type: "button", class: "secondary request-copy", text: "Copy link" });
      copy.addEventListener("click", () => copyLink(field, item.username));
      box.append(
        el("label", {
          for: fieldId,
          text: `One-time set-password link for ${answer.username} (works once, for 72 hours; no email was sent):`,
        }),
        el("div", { class: "search-row" }, field, copy),
      );
    } else if (answer.emailed) {
      box.append(el("p", { class: "muted", text: `${item.email} was emailed about the approval.` }));
    }
    if (answer.note) {
      box.append(el("p", { class: "muted", text: answer.note }));
    }
    return box;
  }

  function decidedItem(item) {
    const answer = results.get(item.id);
    return el(
      "li",
      { class: "card request-card", "data-id": item.id, "data-username": item.username, "data-status": item.status },
      head(item),
      facts(item),
      el("p", { class: "request-reason", text: item.reason }),
      answer ? resultBox(item, answer) : null,
    );
  }

  async function copyLink(field, username) {
    try {
      await navigator.clipboard.writeText(field.value);
      announce(`Set-password link for ${username} copied. Send it to them privately.`);
    } catch {
      field.focus();
      field.select();
      announce(`Copy the selected set-password link for ${username} and send it privately.`);
    }
  }

  function render() {
    const pending = requests.filter((item) => item.status === "pending" || item.status === "approving");
    const decided = requests.filter((item) => !pending.includes(item));
    decided.sort((a, b) => (b.decided_at || b.updated_at) - (a.decided_at || a.updated_at));
    const waiting = requests.filter((item) => item.status === "pending").length;
    loading.hidden = true;
    list.replaceChildren(...pending.map((item) => (item.status === "pending" ? pendingItem(item) : decidedItem(item))));
    empty.hidden = pending.length > 0;
    decidedList.replaceChildren(...decided.map(decidedItem));
    decidedHeading.hidden = decided.length === 0;
    count.textContent = String(waiting);
    count.title = `${waiting} pending`;
    count.hidden = waiting === 0;
    showPending(waiting);
  }

  async function load() {
    try {
      ({ requests } = await api.get("/api/v1/access-requests"));
      loaded = true;
      render();
    } catch (error) {
      loading.hidden = true;
      fail("Could not load access requests", error);
    }
  }

  async function decide(item, card, action) {
    const buttons = card.querySelectorAll("button");
    buttons.forEach((button) => (button.disabled = true));
    try {
      if (action === "approve") {
        const groups = [...card.querySelectorAll("input.request-group:checked")].map((box) => box.dataset.group);
        const answer = await api.post(`/api/v1/access-requests/${item.id}/approve`, { groups });
        results.set(item.id, answer);
        announce(
          answer.already
            ? `The request of ${item.username} was already approved.`
            : `Approved: ${answer.username} can sign in once the password is set.`,
        );
      } else {
        const message = card.querySelector("input.request-message").value.trim();
        const answer = await api.post(`/api/v1/access-requests/${item.id}/reject`, { message });
        announce(`Rejected the request of ${item.username}${answer.emailed ? "; they were emailed" : ""}.`);
      }
      await load();
      const shown = decidedList.querySelector(`li[data-id="${item.id}"]`);
      (shown?.querySelector(".set-password-link") || document.getElementById("requests-heading")).focus();
      if (action === "approve") {
        onApproved();
      }
    } catch (error) {
      buttons.forEach((button) => (button.disabled = false));
      fail(`Could not ${action} the request of ${item.username}`, error);
    }
  }

  return {
    load,
    setGroups(names) {
      const changed = names.join("\n") !== groupNames.join("\n");
      groupNames = names;
      if (loaded && changed) {
        render();
      }
    },
  };
}
