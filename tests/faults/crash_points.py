"""Killing a real `sidecar serve` at a chosen point of its work.

`killing_env` gives a child process a `sitecustomize` (first on its PYTHONPATH) that replaces one function,
named `module:qualname`; once the arm file exists, a call to it SIGKILLs the process before the function runs. Only
the test's child processes carry it; the product has no such hook.
"""

from __future__ import annotations

import os
from pathlib import Path

SITECUSTOMIZE = """
import importlib
import os
import signal


def _arm() -> None:
    spec = os.environ.get("FAULT_KILL_AT", "")
    armed = os.environ.get("FAULT_ARM_FILE", "")
    if not spec or not armed:
        return
    module_name, _, qualname = spec.partition(":")
    owner = importlib.import_module(module_name)
    *parents, name = qualname.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    real = getattr(owner, name)

    def killing(*args, **kwargs):
        if os.path.exists(armed):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(owner, name, killing)


_arm()
"""


def killing_env(env: dict[str, str], where: Path, kill_at: str, arm_file: Path) -> dict[str, str]:
    """`env` for a child that dies at `kill_at` (`module:qualname`) once `arm_file` exists."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "sitecustomize.py").write_text(SITECUSTOMIZE)
    paths = [str(where), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {**env, "PYTHONPATH": os.pathsep.join(paths), "FAULT_KILL_AT": kill_at, "FAULT_ARM_FILE": str(arm_file)}
