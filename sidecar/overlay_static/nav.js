// The pending access-request count next to the Users link, for admins: one GET /api/v1/access-requests per page.
// The /users page keeps it current itself (requests.js calls showPending after every change).

import { api } from "./api.js";

const badge = document.getElementById("nav-requests-badge");

export function showPending(count) {
  if (!badge) {
    return;
  }
  badge.replaceChildren();
  badge.hidden = count <= 0;
  if (count > 0) {
    const hint = document.createElement("span");
    hint.className = "visually-hidden";
    hint.textContent = count === 1 ? " pending access request" : " pending access requests";
    badge.append(String(count), hint);
    badge.title = `${count} pending access ${count === 1 ? "request" : "requests"}`;
  }
}

async function load() {
  try {
    const { requests } = await api.get("/api/v1/access-requests");
    showPending(requests.filter((item) => item.status === "pending").length);
  } catch {
    showPending(0); // the badge is a hint only; the Users page shows errors
  }
}

if (badge && !document.getElementById("requests")) {
  load();
}
