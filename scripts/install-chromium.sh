#!/usr/bin/env bash
# Debian's chromium for the browser tests: Playwright drives /usr/bin/chromium, and no browser is downloaded.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  run() { "$@"; }
else
  run() { sudo "$@"; }
fi
run apt-get update -qq
DEBIAN_FRONTEND=noninteractive run apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
