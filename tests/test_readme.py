"""The README stays true: every setting is in its table with its real default, and the two commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from sidecar.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _table_rows() -> dict[str, str]:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(SIDECAR_[A-Z_]+)` \| ([^|]*) \|", section, flags=re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def _documented_default(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, list):
        return f"`{','.join(value)}`" if value else "(empty)"
    return f"`{value}`"


def test_every_setting_is_in_the_readme_table_with_its_default() -> None:
    rows = _table_rows()
    for name, field in Settings.model_fields.items():
        variable = f"SIDECAR_{name.upper()}"
        assert variable in rows, f"{variable} missing from the README configuration table"
        assert rows[variable] == _documented_default(field.get_default(call_default_factory=True)), variable


def test_readme_table_lists_no_setting_that_does_not_exist() -> None:
    known = {f"SIDECAR_{name.upper()}" for name in Settings.model_fields}
    assert set(_table_rows()) <= known


def test_quick_start_commands_are_the_makefile_targets_ci_runs() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", quick_start, flags=re.MULTILINE)
    assert commands == ["make run", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run: ", makefile, flags=re.MULTILINE)
    assert re.search(r"^test: ", makefile, flags=re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
