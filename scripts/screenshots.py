"""Regenerate the README screenshots: runs `sidecar demo` in a temporary data dir and drives Debian's chromium.

Usage: .venv/bin/pip install playwright && .venv/bin/python scripts/screenshots.py  (needs /usr/bin/chromium)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from sidecar.processes import free_port, start_process, stop_process

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs"
PASSWORD = "demo-password-1"  # noqa: S105 (a throwaway demo data dir)


def cli(env: dict[str, str], *args: str, stdin: str = "") -> None:
    subprocess.run([sys.executable, "-m", "sidecar", *args], env=env, input=stdin, text=True, check=True)


def sign_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/auth/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def main() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, SIDECAR_DATA_DIR=data, SIDECAR_BOOTSTRAP_PASSWORD=PASSWORD)
        cli(env, "bootstrap")
        cli(env, "users", "add", "bob", "--group", "vid_public", "--password-stdin", stdin=PASSWORD + "\n")
        cli(env, "users", "add", "carol", "--group", "vid_private", "--group", "vid_public", "--password-stdin",
            stdin=PASSWORD + "\n")
        cli(env, "users", "add", "dave", "--password-stdin", stdin=PASSWORD + "\n")
        cli(env, "rules", "set", "live/**", "vid_public")
        cli(env, "rules", "set", "live/private/*", "vid_private")
        cli(env, "rules", "set", "mission/alpha", "vid_private")
        demo = start_process([sys.executable, "-m", "sidecar", "demo", "--port", str(port)], env, ready_port=port,
                             timeout=60)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", headless=True,
                    args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
                )
                for name, width in (("desktop", 1100), ("phone", 380)):
                    # The streams pages are shot by the browser tests (SIDECAR_SCREENSHOTS=1 pytest -m browser).
                    shots = [("login", None, "/auth/login"), ("users", "admin", "/users"),
                             ("no-access", "dave", "/streams")]
                    for shot, user, path in shots:
                        context = browser.new_context(viewport={"width": width, "height": 640})
                        page = context.new_page()
                        if user:
                            sign_in(page, base, user)
                        page.goto(base + path)
                        if name == "desktop" or shot == "login":
                            page.screenshot(path=str(OUT / f"{shot}-{name}.png"), full_page=True)
                        context.close()
                browser.close()
        finally:
            stop_process(demo)


if __name__ == "__main__":
    main()
