// The one fetch helper for the sidecar's JSON API: JSON in and out, the X-CSRF-Token header on every change, and
// errors as ApiError carrying the server's plain `error` message.

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

export class ApiError extends Error {
  constructor(message, status, field) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.field = field;
  }
}

let csrfToken = null;

// The page embeds the signed-in user's token (data-csrf-token); without one, ask GET /api/v1/me once.
async function currentCsrfToken(refresh = false) {
  if (csrfToken && !refresh) {
    return csrfToken;
  }
  const embedded = refresh ? null : document.querySelector("[data-csrf-token]");
  if (embedded && embedded.dataset.csrfToken) {
    csrfToken = embedded.dataset.csrfToken;
    return csrfToken;
  }
  const response = await fetch("/api/v1/me", { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) {
    return null;
  }
  const body = await response.json().catch(() => ({}));
  csrfToken = typeof body.csrf_token === "string" ? body.csrf_token : null;
  return csrfToken;
}

export function setCsrfToken(token) {
  csrfToken = token || null;
}

async function send(method, url, body, csrf, refreshCsrf) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  if (csrf && !SAFE_METHODS.has(method)) {
    const token = await currentCsrfToken(refreshCsrf);
    if (token) {
      headers["X-CSRF-Token"] = token;
    }
  }
  return fetch(url, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function errorFrom(response) {
  if (response.status === 401) {
    return new ApiError("You are signed out: reload the page to sign in again", 401);
  }
  const body = await response.json().catch(() => null);
  if (body && typeof body.error === "string" && body.error) {
    return new ApiError(body.error, response.status, body.field);
  }
  return new ApiError(`Request failed (HTTP ${response.status})`, response.status);
}

// request("PUT", "/api/v1/rules", {pattern, groups}) → the parsed JSON answer; throws ApiError on any failure.
// `csrf: false` leaves the CSRF header off (public endpoints such as a share link's token URL).
export async function request(method, url, body, { csrf = true } = {}) {
  const verb = method.toUpperCase();
  let response;
  try {
    response = await send(verb, url, body, csrf, false);
    if (response.status === 403 && csrf && !SAFE_METHODS.has(verb)) {
      // A token signed before the session secret changed: fetch a fresh one once and try again.
      const copy = response.clone();
      const answer = await copy.json().catch(() => null);
      if (answer && typeof answer.error === "string" && answer.error.includes("CSRF")) {
        response = await send(verb, url, body, csrf, true);
      }
    }
  } catch {
    throw new ApiError("The server cannot be reached: check the connection and try again", 0);
  }
  if (!response.ok) {
    throw await errorFrom(response);
  }
  if (response.status === 204) {
    return {};
  }
  return response.json().catch(() => ({}));
}

export const api = {
  get: (url, options) => request("GET", url, undefined, options),
  post: (url, body, options) => request("POST", url, body ?? {}, options),
  put: (url, body, options) => request("PUT", url, body ?? {}, options),
  patch: (url, body, options) => request("PATCH", url, body ?? {}, options),
  delete: (url, options) => request("DELETE", url, undefined, options),
};
