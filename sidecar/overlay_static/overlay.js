// Added by the sidecar to the MediaMTX editor's pages. For admins: an "Access" group in the editor's sidebar built
// like the editor's own groups (Users, Stream access, Audit), the signed-in person in the editor's header instead of
// the sidecar's service account, the editor's own people management (Web Users, Account) replaced by pointers to
// the sidecar's Users page, and a note on the editor's "Users & Auth" tab. Viewers are sent to the sidecar's stream
// list. It only reads the page and /api/v1/me, builds nodes with textContent, and any failure leaves the editor as it
// was.
// Everything stays inside this function: the page is a classic script's global scope, shared with the editor's.
(() => {
  const LINKS = [
    { label: "Users", href: "/users" },
    { label: "Stream access", href: "/streams" },
    { label: "Audit", href: "/audit" },
  ];
  const GROUP_ID = "group-access";
  const ICON = "group"; // a Material Symbols name, like the editor's own group icons
  // The editor's tabs that manage its own accounts, which no longer sign in: people are managed in the sidecar.
  const REPLACED_TABS = ["webusers", "account"];
  const AUTH_BANNER =
    "Stream access is managed by the access sidecar: people and their groups on the Users page, which groups see " +
    "each stream on Stream access. MediaMTX asks the sidecar about every connection (authMethod http or jwt), so it " +
    "ignores the internal users and the Public Access switch below. They take effect only if authMethod is set back " +
    "to internal, and then they replace the sidecar's groups entirely: anyone with such a user, or everyone with " +
    "Public Access on, could watch every stream.";

  async function whoAmI() {
    const response = await fetch("/api/v1/me", { credentials: "include", headers: { Accept: "application/json" } });
    if (!response.ok) {
      return null;
    }
    return response.json();
  }

  function node(tag, className, text) {
    const found = document.createElement(tag);
    if (className) {
      found.className = className;
    }
    if (text !== undefined) {
      found.textContent = text;
    }
    return found;
  }

  // A button in the editor's style (it styles only `button.sidebar-item`) that goes to one of the sidecar's pages.
  function sidebarItem(link, extraClass) {
    const button = node("button", extraClass ? `sidebar-item ${extraClass}` : "sidebar-item");
    button.type = "button";
    button.dataset.href = link.href;
    button.append(node("span", "sidebar-label", link.label));
    button.addEventListener("click", () => window.location.assign(link.href));
    return button;
  }

  // Two people, drawn: needs no font at all, and takes the label's colour (grey, white on hover, blue when open).
  function peopleIcon() {
    const svg = "http://www.w3.org/2000/svg";
    const icon = document.createElementNS(svg, "svg");
    icon.setAttribute("viewBox", "0 0 24 24");
    icon.setAttribute("width", "1em");
    icon.setAttribute("height", "1em");
    icon.setAttribute("fill", "currentColor");
    icon.setAttribute("aria-hidden", "true");
    icon.classList.add("sidecar-icon");
    const shapes = [
      ["circle", { cx: "9", cy: "8", r: "3.5" }],
      ["circle", { cx: "17", cy: "9", r: "2.5" }],
      ["path", { d: "M2 19c0-3.3 3.1-5.5 7-5.5s7 2.2 7 5.5v1H2z" }],
      ["path", { d: "M16.5 13.6c2.9.2 5.5 1.9 5.5 4.4v1h-4.5c0-2.2-.4-4-1-5.4z" }],
    ];
    for (const [tag, attributes] of shapes) {
      const shape = document.createElementNS(svg, tag);
      for (const [name, value] of Object.entries(attributes)) {
        shape.setAttribute(name, value);
      }
      icon.append(shape);
    }
    return icon;
  }

  // The editor loads its icon font from a CDN; offline (an air-gapped site) icon names show as words, and the word
  // would be cut off in the 52 px strip. Without the font a ligature is as wide as its letters: then a drawn icon.
  function iconFontMissing(symbol) {
    const probe = node("span", "material-symbols-outlined", "x");
    symbol.after(probe);
    const missing = symbol.offsetWidth > 2 * probe.offsetWidth;
    probe.remove();
    return missing;
  }

  // Opens and closes like the editor's groups (its own toggleGroup: the sidebar expands with the first open group),
  // and answers the keyboard, which the editor's labels do not.
  function toggle(group, label) {
    if (typeof window.toggleGroup === "function") {
      window.toggleGroup(GROUP_ID);
    } else {
      group.classList.toggle("collapsed");
    }
    label.setAttribute("aria-expanded", String(!group.classList.contains("collapsed")));
  }

  function accessGroup(sidebar) {
    const group = node("div", "sidebar-group collapsed");
    group.id = GROUP_ID;
    const label = node("div", "sidebar-group-label");
    label.id = `${GROUP_ID}-label`;
    label.setAttribute("role", "button");
    label.tabIndex = 0;
    label.setAttribute("aria-expanded", "false");
    label.setAttribute("aria-controls", `${GROUP_ID}-items`);
    label.title = "Access";
    const icon = node("span", "sidebar-icon");
    const symbol = node("span", "material-symbols-outlined", ICON);
    symbol.setAttribute("aria-hidden", "true");
    icon.append(symbol);
    sidebar.append(icon); // measured in place (see iconFontMissing), moved into the label below
    const arrow = node("span", "group-arrow", "▶");
    arrow.setAttribute("aria-hidden", "true");
    if (iconFontMissing(symbol)) {
      symbol.replaceWith(peopleIcon());
    }
    label.append(icon, node("span", "sidebar-label", "Access"), arrow);
    label.addEventListener("click", () => toggle(group, label));
    label.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        toggle(group, label);
      }
    });
    const items = node("div", "sidebar-group-items");
    items.id = `${GROUP_ID}-items`;
    items.setAttribute("role", "group");
    items.setAttribute("aria-labelledby", label.id);
    items.append(...LINKS.map((link) => sidebarItem(link)));
    group.append(label, items);
    sidebar.append(group);
  }

  // Without the editor's sidebar its layout is unknown: a small box of its own, out of the way.
  function floatingBox() {
    const box = node("nav", "sidecar-access-box");
    box.id = GROUP_ID;
    box.setAttribute("aria-label", "Access");
    for (const link of LINKS) {
      const anchor = node("a", "", link.label);
      anchor.href = link.href;
      box.append(anchor);
    }
    document.body.append(box);
  }

  // The editor shows the account it was signed in with, which is the sidecar's service account for everyone.
  function showPerson(me) {
    const user = document.querySelector(".header-user > span");
    if (!user) {
      return;
    }
    const fresh = node("span", "sidecar-person", me.name || me.username);
    fresh.dataset.sidecarPerson = me.username;
    fresh.title = `Signed in as ${me.username}`;
    user.replaceWith(fresh); // also drops its click, which opened the editor's password change
  }

  function pointerPanel(text) {
    const panel = node("div", "sidecar-pointer-panel");
    const link = node("a", "", "Open the Users page");
    link.href = "/users";
    panel.append(node("p", "", text), link);
    return panel;
  }

  function replaceAccountTabs(sidebar) {
    const buttons = sidebar
      ? [...sidebar.querySelectorAll("button.sidebar-item")].filter((button) =>
          REPLACED_TABS.some((tab) => (button.getAttribute("onclick") || "").includes(`'${tab}'`)),
        )
      : [];
    for (const button of buttons) {
      button.hidden = true;
    }
    if (buttons.length) {
      buttons[0].before(sidebarItem(LINKS[0], "sidecar-pointer"));
    }
    for (const tab of REPLACED_TABS) {
      const body = document.getElementById(tab);
      if (body && !body.querySelector(".sidecar-pointer-panel")) {
        // Hidden rather than removed: the editor's own scripts still look for what is inside.
        for (const child of body.children) {
          child.hidden = true;
        }
        body.prepend(
          pointerPanel(
            "People sign in through the access sidecar and are managed on its Users page; the editor's own " +
              "accounts and passwords are not used.",
          ),
        );
      }
    }
  }

  function authBanner() {
    const tab = document.getElementById("users");
    if (!tab || document.getElementById("sidecar-auth-banner")) {
      return;
    }
    const banner = node("div", "sidecar-banner", AUTH_BANNER);
    banner.id = "sidecar-auth-banner";
    banner.setAttribute("role", "note");
    tab.prepend(banner);
  }

  function overlayForAdmins(me) {
    if (document.getElementById(GROUP_ID)) {
      return;
    }
    const sidebar = document.querySelector("nav.sidebar#sidebar");
    if (sidebar && sidebar.querySelector(".sidebar-group")) {
      accessGroup(sidebar);
    } else if (document.body) {
      floatingBox();
    }
    // Each step on its own: markup the editor changed must not cost the others.
    for (const step of [() => showPerson(me), () => replaceAccountTabs(sidebar), authBanner]) {
      try {
        step();
      } catch {
        // the editor's markup differs from what this expects: leave that part as it is
      }
    }
  }

  async function main() {
    const me = await whoAmI();
    const role = me && typeof me.role === "string" ? me.role : "none";
    if (role === "admin") {
      overlayForAdmins(me);
    } else if (role === "viewer") {
      window.location.replace("/streams");
    }
  }

  main().catch(() => {
    // Silent on purpose: the editor must keep working whatever happens to the overlay.
  });
})();
