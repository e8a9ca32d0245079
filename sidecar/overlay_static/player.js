// The HLS player shared by the streams page and share-link pages. It asks for a short-lived playback token, plays
// `${hlsBase}/${path}/index.m3u8` with hls.js (token sent as `Authorization: Bearer`), or with the browser's own HLS
// (Safari) with `?token=` appended, and renews the token before it expires.
//
// Any `<video data-token-url="..." data-path="...">` on the page starts by itself: the token comes from a POST of
// `{}` to its data-token-url. Optional: data-hls-url (on the video or an ancestor) and data-status-id (the id of an
// element that receives status text). Every status is also dispatched on the video as a `player:status` event.

import { api } from "./api.js";

const HLS_SCRIPT = new URL("./vendor/hls.min.js", import.meta.url).href;
const NATIVE_HLS = "application/vnd.apple.mpegurl";
let hlsLoading = null;

// hls.js, vendored at install time and loaded once as a classic script (it defines window.Hls).
export function loadHls() {
  if (window.Hls) {
    return Promise.resolve(window.Hls);
  }
  if (!hlsLoading) {
    hlsLoading = new Promise((resolve) => {
      const script = document.createElement("script");
      script.src = HLS_SCRIPT;
      script.async = true;
      script.addEventListener("load", () => resolve(window.Hls || null));
      script.addEventListener("error", () => {
        hlsLoading = null;
        resolve(null);
      });
      document.head.append(script);
    });
  }
  return hlsLoading;
}

// settings.hls_url when set, else MediaMTX's default HLS port on the page's own host.
export function hlsBaseUrl(configured) {
  const base = (configured || "").trim().replace(/\/+$/, "");
  return base || `${window.location.protocol}//${window.location.hostname}:8888`;
}

export function streamUrl(hlsBase, path) {
  const encoded = path
    .split("/")
    .map((part) => encodeURIComponent(part))
    .join("/");
  return `${hlsBase}/${encoded}/index.m3u8`;
}

// How long the token lives, from its own iat/exp claims (immune to a wrong client clock), else from expires_at.
function lifetimeMs(answer) {
  try {
    const part = answer.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part));
    if (Number.isFinite(claims.exp) && Number.isFinite(claims.iat) && claims.exp > claims.iat) {
      return (claims.exp - claims.iat) * 1000;
    }
  } catch {
    // not a JWT we can read: fall through to expires_at
  }
  if (Number.isFinite(answer.expires_at)) {
    return answer.expires_at * 1000 - Date.now();
  }
  return 60_000;
}

// Renew a minute before expiry, or at three quarters of a short lifetime; never in a tight loop.
function renewDelayMs(answer) {
  const lifetime = lifetimeMs(answer);
  const delay = lifetime > 120_000 ? lifetime - 60_000 : lifetime * 0.75;
  return Math.max(10_000, delay);
}

function withToken(url, token) {
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

// Start playing `path` in `video`. Options: hlsBase (string), requestToken (async () => {token, expires_at}),
// onStatus ((message, kind) => void, kind "info" | "error"). Returns {path, stop()}.
export function attachPlayer(video, { path, hlsBase, requestToken, onStatus } = {}) {
  const base = hlsBaseUrl(hlsBase);
  const url = streamUrl(base, path);
  const askToken = requestToken || (() => api.post("/api/v1/streams/token", { path }));
  let stopped = false;
  let hls = null;
  let native = false;
  let token = null;
  let timer = null;
  let authRetried = false;

  const report = (message, kind = "info") => {
    if (stopped && kind !== "stopped") {
      return;
    }
    if (onStatus) {
      onStatus(message, kind);
    }
    video.dispatchEvent(new CustomEvent("player:status", { detail: { message, kind, path } }));
  };

  const fetchToken = async () => {
    const answer = await askToken();
    if (!answer || typeof answer.token !== "string" || !answer.token) {
      throw new Error("the server gave no playback token");
    }
    token = answer.token;
    window.clearTimeout(timer);
    timer = window.setTimeout(renew, renewDelayMs(answer));
  };

  const playNow = () => {
    video.play().catch((error) => {
      if (stopped || !error || error.name !== "NotAllowedError") {
        return;
      }
      // The browser blocks sound without a click: start muted rather than not at all.
      video.muted = true;
      video
        .play()
        .then(() => report(`Playing ${path} muted: unmute it with the video controls.`))
        .catch(() => report(`Press play on the video to start ${path}.`));
    });
  };

  async function renew() {
    if (stopped) {
      return;
    }
    try {
      await fetchToken();
      if (native && !stopped) {
        // The browser's own player keeps the URL it was given: hand it the new token.
        video.src = withToken(url, token);
        playNow();
      }
    } catch (error) {
      if (stopped) {
        return;
      }
      report(`Access to ${path} could not be renewed: ${error.message}`, "error");
      if (!error.status || error.status >= 500) {
        timer = window.setTimeout(renew, 10_000);
      }
    }
  }

  const onHlsError = async (Hls, data) => {
    if (stopped || !data || !data.fatal) {
      return;
    }
    const code = data.response && data.response.code;
    if (data.type === Hls.ErrorTypes.NETWORK_ERROR && (code === 401 || code === 403) && !authRetried) {
      authRetried = true;
      try {
        await fetchToken();
        hls.loadSource(url);
        return;
      } catch (error) {
        report(`Access to ${path} was refused: ${error.message}`, "error");
        return;
      }
    }
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
      hls.recoverMediaError();
      return;
    }
    const detail = code ? `HTTP ${code}` : data.details;
    report(`The stream ${path} could not be loaded (${detail}).`, "error");
  };

  async function start() {
    report(`Loading ${path}…`);
    try {
      await fetchToken();
    } catch (error) {
      report(`Cannot play ${path}: ${error.message}`, "error");
      return;
    }
    if (stopped) {
      return;
    }
    const Hls = await loadHls();
    if (stopped) {
      return;
    }
    if (Hls && Hls.isSupported()) {
      hls = new Hls({
        xhrSetup: (xhr) => {
          if (token) {
            xhr.setRequestHeader("Authorization", `Bearer ${token}`);
          }
        },
      });
      hls.on(Hls.Events.MANIFEST_PARSED, () => {
        authRetried = false;
        report(`Playing ${path}.`);
        playNow();
      });
      hls.on(Hls.Events.ERROR, (_event, data) => {
        onHlsError(Hls, data);
      });
      hls.loadSource(url);
      hls.attachMedia(video);
    } else if (video.canPlayType(NATIVE_HLS)) {
      native = true;
      video.src = withToken(url, token);
      video.addEventListener("loadedmetadata", () => report(`Playing ${path}.`), { once: true });
      playNow();
    } else {
      report("This browser cannot play HLS video.", "error");
    }
  }

  const stop = () => {
    if (stopped) {
      return;
    }
    stopped = true;
    window.clearTimeout(timer);
    if (hls) {
      hls.destroy();
      hls = null;
    }
    video.pause();
    video.removeAttribute("src");
    video.load();
    if (video.dataset.playing === path) {
      delete video.dataset.playing;
    }
    report(`Stopped ${path}.`, "stopped");
  };

  video.dataset.playing = path;
  start();
  return { path, stop };
}

// Self-start every <video data-token-url data-path> (share-link pages).
function initialise() {
  for (const video of document.querySelectorAll("video[data-token-url][data-path]")) {
    if (video.dataset.playerAttached) {
      continue;
    }
    video.dataset.playerAttached = "true";
    const statusTarget = video.dataset.statusId ? document.getElementById(video.dataset.statusId) : null;
    const configured = video.closest("[data-hls-url]");
    attachPlayer(video, {
      path: video.dataset.path,
      hlsBase: configured ? configured.dataset.hlsUrl : "",
      requestToken: () => api.post(video.dataset.tokenUrl, {}, { csrf: false }),
      onStatus: (message, kind) => {
        if (statusTarget) {
          statusTarget.textContent = message;
          statusTarget.classList.toggle("error", kind === "error");
        }
      },
    });
  }
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", initialise, { once: true });
} else {
  initialise();
}
