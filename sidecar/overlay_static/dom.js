// Small DOM helpers shared by the pages: building elements, and one status region that screen readers announce.

const ATTRIBUTES = new Set(["role", "for", "readonly", "spellcheck", "autocapitalize", "autocomplete", "placeholder"]);

// el("button", {class: "x", text: "Play", "data-path": p}, child...) — attributes for data-/aria-/ATTRIBUTES, DOM
// properties otherwise; null, undefined and false props and children are skipped.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (key === "class") {
      node.className = value;
    } else if (key === "text") {
      node.textContent = value;
    } else if (key.startsWith("data-") || key.startsWith("aria-") || ATTRIBUTES.has(key)) {
      node.setAttribute(key, value === true ? "" : String(value));
    } else {
      node[key] = value;
    }
  }
  node.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

// Status and errors for everyone, screen readers included: the region is cleared first so a repeated message is
// read again, and only the latest of several quick messages is shown.
export function announcer(statusBox) {
  let announced = 0;
  return function announce(message, kind = "info") {
    const mine = ++announced;
    statusBox.textContent = "";
    statusBox.dataset.kind = kind;
    window.setTimeout(() => {
      if (mine === announced) {
        statusBox.textContent = message;
      }
    }, 40);
  };
}
