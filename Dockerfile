# The MediaMTX access sidecar as a container: `sidecar serve` on 0.0.0.0:8088 as an unprivileged user, with its
# SQLite database and generated secrets in the /data volume. compose.yaml runs it behind Caddy.
# hls.js for the player, from the npm registry at build time (the running container never fetches it).
FROM node:20-slim AS player
WORKDIR /player
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# A fixed uid/gid, so file ownership in the data volume survives image rebuilds.
RUN groupadd --system --gid 10001 sidecar \
    && useradd --system --uid 10001 --gid sidecar --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin sidecar \
    && install -d -o sidecar -g sidecar -m 0700 /data

# Only what the package build needs; .dockerignore keeps the rest (.venv, data, .env, .git) out of the context.
WORKDIR /build
COPY pyproject.toml ./
COPY sidecar ./sidecar
COPY --from=player /player/node_modules/hls.js/dist/hls.min.js ./sidecar/overlay_static/vendor/hls.min.js
COPY --from=player /player/node_modules/hls.js/LICENSE ./sidecar/overlay_static/vendor/hls.js.LICENSE
RUN pip install --no-cache-dir . && rm -rf /build

# Not the data volume: Settings also reads a `.env` from the working directory, and that must not be a file the
# service itself can write.
WORKDIR /app

ENV SIDECAR_HOST=0.0.0.0 \
    SIDECAR_PORT=8088 \
    SIDECAR_DATA_DIR=/data

VOLUME ["/data"]
EXPOSE 8088
USER sidecar:sidecar

# The slim image has no curl; Python's urllib raises (exit 1) on a refused connection or any non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SIDECAR_PORT', '8088') + '/healthz', timeout=4)"]

ENTRYPOINT ["sidecar"]
CMD ["serve"]
