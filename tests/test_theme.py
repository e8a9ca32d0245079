"""One product, two themes: with an editor configured every sidecar page wears the MediaMTX editor's dark theme
(`data-theme="dark"` on <html>), without one none does (the light theme, or dark when the browser prefers it); the
header names one product on every page; sidecar.css keeps every colour in custom properties set by the theme blocks,
and the contrast table at its top is true (text >= 4.5:1, input borders and focus rings >= 3:1 in both themes)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.settings import Settings
from tests.helpers import TRUSTED_PEER, bootstrapped_settings, cheapen_bcrypt, form_token, login

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

ROOT = Path(__file__).resolve().parent.parent
CSS = ROOT / "sidecar" / "overlay_static" / "sidecar.css"
TEMPLATES = ROOT / "sidecar" / "templates"
EDITOR_URL = "http://127.0.0.1:9"  # never contacted: only the sidecar's own pages are asked for
PRODUCT = "MediaMTX · Stream access"
HTML = {"accept": "text/html"}
ORIGIN = {"origin": "http://testserver"}
VIEWER, VIEWER_PASSWORD = "bob", "bob-password-1"

LIGHT = (None, ":root")
DARK = (None, ':root[data-theme="dark"]')
PREFERS_DARK = ("@media (prefers-color-scheme: dark)", ":root:not([data-theme])")
THEME_BLOCKS = (LIGHT, DARK, PREFERS_DARK)
# The editor's own palette (../shared/editor/mediamtx_config_editor.py), which the dark theme must reuse.
EDITOR_PALETTE = {
    "--bg": "#1a1a1a",
    "--card": "#2d2d2d",
    "--fg": "#e5e5e5",
    "--accent": "#3b82f6",
    "--header-bg": "#1e3a8a",
    "--header-bg-end": "#1e293b",
}

HEX = re.compile(r"#[0-9a-fA-F]{3,8}(?![\w-])")
COLOUR_FUNCTION = re.compile(r"(?<![\w-])(?:rgba?|hsla?|hwb|lab|lch|oklab|oklch|color)\(", re.IGNORECASE)
NAMED = re.compile(
    r"(?<![\w-])(?:white|black|red|green|blue|yellow|orange|purple|gray|grey|silver|navy|maroon|teal|olive|lime|aqua"
    r"|fuchsia|pink|brown|gold|crimson|indigo|violet|tomato|coral|salmon|khaki|beige|ivory|snow|tan)(?![\w-])",
    re.IGNORECASE,
)
ROW = re.compile(r"^\s*(--[\w-]+)\s+(--[\w-]+)\s+(\d+(?:\.\d+)?)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\b", re.MULTILINE)


# --- a small CSS reader --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    media: str | None  # the enclosing @media prelude, if any
    selector: str
    declarations: tuple[tuple[str, str], ...]


def _blocks(text: str) -> list[tuple[str, str]]:
    """Top-level `prelude { body }` pairs of `text` (bodies may nest)."""
    found: list[tuple[str, str]] = []
    start = 0
    while (opening := text.find("{", start)) >= 0:
        depth, index = 1, opening + 1
        while depth:
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        found.append((text[start:opening].strip(), text[opening + 1 : index - 1]))
        start = index
    assert not text[start:].strip(), f"text after the last rule: {text[start:]!r}"
    return found


def _declarations(body: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for part in body.split(";"):
        if part.strip():
            name, sep, value = part.partition(":")
            assert sep, f"not a declaration: {part!r}"
            pairs.append((name.strip(), value.strip()))
    return tuple(pairs)


def parse_css(text: str) -> list[Rule]:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    rules = []
    for prelude, body in _blocks(text):
        if prelude.startswith("@media"):
            rules += [Rule(" ".join(prelude.split()), s, _declarations(b)) for s, b in _blocks(body)]
        else:
            rules.append(Rule(None, prelude, _declarations(body)))
    return rules


def themes(rules: list[Rule]) -> dict[tuple[str | None, str], dict[str, str]]:
    """The custom properties of each theme block, by (media, selector)."""
    found: dict[tuple[str | None, str], dict[str, str]] = {}
    for rule in rules:
        if (rule.media, rule.selector) in THEME_BLOCKS:
            found.setdefault((rule.media, rule.selector), {}).update(
                (name, value) for name, value in rule.declarations if name.startswith("--")
            )
    return found


def literal_colours(rules: list[Rule]) -> list[str]:
    """Every colour written out (hex, rgb()/hsl()/..., a named colour) in a rule that is not a theme block."""
    found = []
    for rule in rules:
        if (rule.media, rule.selector) in THEME_BLOCKS:
            continue
        for name, value in rule.declarations:
            for pattern in (HEX, COLOUR_FUNCTION, NAMED):
                found += [f"{rule.selector} {{ {name}: {value} }}" for _ in pattern.finditer(value)]
    return found


# --- contrast ------------------------------------------------------------------------------------------------------


def resolve(theme: dict[str, str], value: str) -> str:
    while (match := re.fullmatch(r"var\((--[\w-]+)\)", value.strip())) is not None:
        value = theme[match.group(1)]
    return value


def luminance(colour: str) -> float:
    """WCAG 2.x relative luminance of an opaque #rgb or #rrggbb colour."""
    digits = colour.lstrip("#")
    assert re.fullmatch(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}", digits), f"not an opaque hex colour: {colour}"
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(first: str, second: str) -> float:
    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.fixture(scope="module")
def css_text() -> str:
    return CSS.read_text()


@pytest.fixture(scope="module")
def rules(css_text: str) -> list[Rule]:
    return parse_css(css_text)


@pytest.fixture(scope="module")
def theme_values(rules: list[Rule]) -> dict[tuple[str | None, str], dict[str, str]]:
    return themes(rules)


# --- the pages -----------------------------------------------------------------------------------------------------


def _viewer(client: TestClient) -> None:
    users = client.app.state.services.users  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        client.portal.call(users.add_user, VIEWER, ["vid_public"], VIEWER_PASSWORD, "test")


def visit_every_page(client: TestClient) -> dict[str, httpx.Response]:
    """Each page the sidecar renders, as a browser gets it: sign-in, request access (form and done), the share page
    and its 404, streams, users and audit for an admin, and the 403 page a viewer gets on /users."""
    pages: dict[str, httpx.Response] = {"sign-in": client.get("/auth/login", headers=HTML)}
    pages["request access"] = client.get("/request-access", headers=HTML)
    # The honeypot field filled in: the "received" page, with nothing stored.
    done = {"form_token": form_token(client), "name": "N", "username": "n", "email": "n@example.org", "website": "x"}
    pages["request received"] = client.post("/request-access", data={**done, "reason": "r"}, headers=ORIGIN)
    pages["unknown share link"] = client.get("/share/" + "A" * 43, headers=HTML)
    headers = login(client)
    for path in ("/streams", "/users", "/audit"):
        pages[path] = client.get(path, headers=HTML)
    created = client.post("/api/v1/share-links", json={"path": "live/cam1", "ttl": "1h"}, headers=headers)
    assert created.status_code == 201, created.text
    client.cookies.clear()
    pages["share page"] = client.get(created.json()["url"], headers=HTML)
    _viewer(client)
    login(client, VIEWER, VIEWER_PASSWORD)
    pages["no access"] = client.get("/users", headers=HTML)
    client.cookies.clear()
    expected = {"unknown share link": 404, "no access": 403}
    for name, response in pages.items():
        assert response.status_code == expected.get(name, 200), (name, response.status_code, response.text[:300])
        assert response.headers["content-type"].startswith("text/html"), name
    return pages


@pytest.fixture
def open_app(tmp_path: Path) -> Callable[..., TestClient]:
    """An unopened client of a fresh bootstrapped local-mode app with these settings (use it in a `with`)."""
    made: list[Settings] = []

    def factory(**overrides: object) -> TestClient:
        made.append(bootstrapped_settings(tmp_path / f"data{len(made)}", **overrides))
        return TestClient(create_app(made[-1]), client=TRUSTED_PEER, base_url="http://testserver")

    return factory


@pytest.fixture
def editor_pages(open_app: Callable[..., TestClient]) -> dict[str, httpx.Response]:
    with open_app(editor_url=EDITOR_URL) as client:
        return visit_every_page(client)


@pytest.fixture
def plain_pages(open_app: Callable[..., TestClient]) -> dict[str, httpx.Response]:
    with open_app() as client:
        return visit_every_page(client)


def html_tag(response: httpx.Response) -> str:
    found = re.search(r"<html\b[^>]*>", response.text)
    assert found, response.text[:200]
    return found.group(0)


def brand(response: httpx.Response) -> str:
    found = re.findall(r'<span class="brand">(.*?)</span>', response.text, flags=re.DOTALL)
    assert len(found) == 1, found
    return " ".join(found[0].split())


def test_every_page_wears_the_editors_dark_theme_when_an_editor_is_configured(
    editor_pages: dict[str, httpx.Response],
) -> None:
    for name, response in editor_pages.items():
        assert html_tag(response) == '<html lang="en" data-theme="dark">', name
        assert '<meta name="color-scheme" content="dark">' in response.text, name
        assert '<link rel="stylesheet" href="/overlay/sidecar.css">' in response.text, name


def test_no_page_sets_a_theme_without_an_editor(plain_pages: dict[str, httpx.Response]) -> None:
    for name, response in plain_pages.items():
        assert html_tag(response) == '<html lang="en">', name
        assert "data-theme" not in response.text, name
        # The light theme, or the dark one when the browser prefers it.
        assert '<meta name="color-scheme" content="light dark">' in response.text, name


def test_the_header_names_one_product_on_every_page(
    editor_pages: dict[str, httpx.Response], plain_pages: dict[str, httpx.Response]
) -> None:
    for name, response in [*editor_pages.items(), *plain_pages.items()]:
        assert brand(response) == PRODUCT, name
        title = re.search(r"<title>(.*?)</title>", response.text, flags=re.DOTALL)
        assert title and title.group(1).endswith("· MediaMTX"), name


def test_every_page_template_extends_the_base_layout() -> None:
    """So the theme and the header reach pages the tests above do not open (set-password, confirm, first admin)."""
    pages = sorted(path.name for path in TEMPLATES.glob("*.html") if path.name not in {"base.html", "demo_editor.html"})
    assert len(pages) >= 10, pages
    for name in pages:
        assert (TEMPLATES / name).read_text().startswith('{% extends "base.html" %}'), name
    base = (TEMPLATES / "base.html").read_text()
    assert base.count('<span class="brand">{{ product }}</span>') == 1
    assert '<html lang="en"{% if theme %} data-theme="{{ theme }}"{% endif %}>' in base


def test_the_stylesheet_is_served(open_app: Callable[..., TestClient]) -> None:
    with open_app() as client:
        response = client.get("/overlay/sidecar.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert response.text == CSS.read_text()


# --- the stylesheet ------------------------------------------------------------------------------------------------


def test_the_css_defines_a_light_and_a_dark_theme(
    rules: list[Rule], theme_values: dict[tuple[str | None, str], dict[str, str]]
) -> None:
    assert set(theme_values) == set(THEME_BLOCKS)
    light, dark, prefers_dark = (theme_values[block] for block in THEME_BLOCKS)
    assert len(light) >= 20
    assert set(light) == set(dark), set(light) ^ set(dark)
    assert dark == prefers_dark, "the editor's dark theme and the browser-preference dark theme differ"
    for name, value in EDITOR_PALETTE.items():
        assert dark[name].lower() == value, name
        assert light[name].lower() != value, name
    schemes = {(r.media, r.selector): dict(r.declarations).get("color-scheme") for r in rules}
    assert [schemes[block] for block in THEME_BLOCKS] == ["light", "dark", "dark"]
    # Custom properties live only in the theme blocks; the blocks hold colours (or other properties) and nothing else.
    for rule in rules:
        names = [name for name, _ in rule.declarations if name.startswith("--")]
        assert (rule.media, rule.selector) in THEME_BLOCKS or not names, rule.selector
    for values in (light, dark):
        for name, value in values.items():
            assert HEX.fullmatch(value) or re.fullmatch(r"var\(--[\w-]+\)", value), (name, value)


def test_the_header_uses_the_header_colours(rules: list[Rule]) -> None:
    topbar = dict(next(rule for rule in rules if rule.selector == ".topbar").declarations)
    assert topbar["background"] == "linear-gradient(135deg, var(--header-bg) 0%, var(--header-bg-end) 100%)"
    assert topbar["color"] == "var(--header-fg)"


def test_no_colour_is_written_outside_the_theme_blocks(rules: list[Rule]) -> None:
    assert literal_colours(rules) == []


@pytest.mark.parametrize(
    "sneaked",
    [
        ".x { color: #fff; }",
        ".x { border: 1px solid #C7CCD4; }",
        ".x { box-shadow: 0 1px 3px #0002; }",
        ".x { background: rgb(0 0 0 / 50%); }",
        "@media (max-width: 600px) { .x { outline: 3px solid white; } }",
        ':root[data-theme="light"] { --bg: #fff; } .y { color: hsl(0 0% 0%); }',
    ],
)
def test_the_colour_check_finds_a_written_out_colour(css_text: str, sneaked: str) -> None:
    assert literal_colours(parse_css(css_text + "\n" + sneaked)) != []


def test_every_variable_used_is_set_by_every_theme(
    css_text: str, theme_values: dict[tuple[str | None, str], dict[str, str]]
) -> None:
    used = set(re.findall(r"var\((--[\w-]+)\)", re.sub(r"/\*.*?\*/", "", css_text, flags=re.DOTALL)))
    assert len(used) >= 20
    for block, values in theme_values.items():
        assert used <= set(values), (block, used - set(values))


def test_the_contrast_formula() -> None:
    assert round(contrast("#000", "#fff"), 2) == 21.0
    assert round(contrast("#777777", "#ffffff"), 2) == 4.48
    assert round(contrast("#c7ccd4", "#fff"), 2) == 1.61  # the light theme's former input border
    assert contrast("#abc", "#abc") == 1.0


def test_the_claimed_contrast_ratios_hold(
    css_text: str, theme_values: dict[tuple[str | None, str], dict[str, str]]
) -> None:
    table = css_text[: css_text.index("*/")]
    rows = ROW.findall(table)
    assert len(rows) >= 30, "the contrast table at the top of sidecar.css is missing or unreadable"
    light, dark = theme_values[LIGHT], theme_values[DARK]
    for fg, bg, need, claimed_light, claimed_dark in rows:
        assert float(need) in (3.0, 4.5), (fg, bg, need)
        for theme, claimed in ((light, claimed_light), (dark, claimed_dark)):
            ratio = contrast(resolve(theme, theme[fg]), resolve(theme, theme[bg]))
            assert f"{ratio:.2f}" == claimed, (fg, bg, ratio, claimed)
            assert ratio >= float(need), (fg, bg, ratio, need)


@pytest.mark.parametrize(
    ("fg", "bg", "need"),
    [
        ("--fg", "--bg", 4.5),
        ("--fg", "--card", 4.5),
        ("--fg", "--field-bg", 4.5),
        ("--muted", "--bg", 4.5),
        ("--muted", "--card", 4.5),
        ("--link", "--card", 4.5),
        ("--link", "--hover-bg", 4.5),
        ("--button-fg", "--button-bg", 4.5),
        ("--bad", "--card", 4.5),
        ("--header-fg", "--header-bg", 4.5),
        ("--header-fg", "--header-bg-end", 4.5),
        ("--status-fg", "--status-bg", 4.5),
        ("--field-border", "--field-bg", 3.0),
        ("--field-border", "--card", 3.0),
        ("--field-border", "--bg", 3.0),
        ("--focus", "--card", 3.0),
        ("--focus", "--bg", 3.0),
        ("--header-focus", "--header-bg", 3.0),
        ("--header-focus", "--header-bg-end", 3.0),
    ],
)
def test_the_table_covers_the_pairs_that_matter(css_text: str, fg: str, bg: str, need: float) -> None:
    rows = {(row[0], row[1]): float(row[2]) for row in ROW.findall(css_text[: css_text.index("*/")])}
    assert rows.get((fg, bg)) == need


def test_focus_rings_and_field_borders_use_the_checked_variables(rules: list[Rule]) -> None:
    """The variables the table checks are the ones the rules use: every outline is a focus colour, every input-like
    control's border the field border."""
    outlines = [value for rule in rules for name, value in rule.declarations if name in ("outline", "outline-color")]
    assert len(outlines) >= 5
    for value in outlines:
        assert value == "none" or re.search(r"var\(--(?:header-)?focus\)", value), value
    fields = [rule for rule in rules if re.search(r"(?<![\w-])(?:input|select|textarea)(?![\w-])", rule.selector)]
    borders = [value for rule in fields for name, value in rule.declarations if name == "border"]
    assert borders and all("var(--field-border)" in value for value in borders), borders
