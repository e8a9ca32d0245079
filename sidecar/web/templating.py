"""The Jinja2 environment for every page (autoescaping on, templates in sidecar/templates)."""

from __future__ import annotations

from pathlib import Path

from starlette.templating import Jinja2Templates

from sidecar import __version__

templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
templates.env.globals["version"] = __version__
