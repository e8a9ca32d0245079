// Added by the sidecar to the MediaMTX editor's pages: an "Access" group in the editor's sidebar for admins
// (Users, Stream access), and viewers sent to the sidecar's stream list. It only reads the page and /api/v1/me;
// any failure leaves the editor exactly as it was.

const LINKS = [
  { label: "Users", href: "/users" },
  { label: "Stream access", href: "/streams" },
];
const GROUP_ID = "group-access";

async function whoAmI() {
  const response = await fetch("/api/v1/me", { credentials: "include", headers: { Accept: "application/json" } });
  if (!response.ok) {
    return null;
  }
  return response.json();
}

// The editor's own markup and classes, so its stylesheet gives the new group the look of the others. Buttons
// navigate (rather than links) because the editor styles only `button.sidebar-item`; buttons are focusable and
// answer Enter and Space by themselves.
function sidebarGroup(sidebar) {
  const group = document.createElement("div");
  group.className = "sidebar-group";
  group.id = GROUP_ID;
  const label = document.createElement("div");
  label.className = "sidebar-group-label";
  label.id = `${GROUP_ID}-label`;
  label.textContent = "Access";
  const items = document.createElement("div");
  items.className = "sidebar-group-items";
  items.setAttribute("role", "group");
  items.setAttribute("aria-labelledby", label.id);
  for (const link of LINKS) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sidebar-item";
    button.textContent = link.label;
    button.dataset.href = link.href;
    button.addEventListener("click", () => {
      window.location.assign(link.href);
    });
    items.append(button);
  }
  group.append(label, items);
  sidebar.append(group);
}

// Without the sidebar the editor's layout is unknown: a small box of its own, out of the way.
function floatingBox() {
  const box = document.createElement("nav");
  box.className = "sidecar-access-box";
  box.id = GROUP_ID;
  box.setAttribute("aria-label", "Access");
  for (const link of LINKS) {
    const anchor = document.createElement("a");
    anchor.href = link.href;
    anchor.textContent = link.label;
    box.append(anchor);
  }
  document.body.append(box);
}

function addAccessLinks() {
  if (document.getElementById(GROUP_ID)) {
    return;
  }
  const sidebar = document.querySelector("nav.sidebar#sidebar");
  if (sidebar && sidebar.querySelector(".sidebar-group")) {
    sidebarGroup(sidebar);
  } else if (document.body) {
    floatingBox();
  }
}

async function main() {
  const me = await whoAmI();
  const role = me && typeof me.role === "string" ? me.role : "none";
  if (role === "admin") {
    addAccessLinks();
  } else if (role === "viewer") {
    window.location.replace("/streams");
  }
}

main().catch(() => {
  // Silent on purpose: the editor must keep working whatever happens to the overlay.
});
