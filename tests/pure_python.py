"""Run a test again as pure Python when the validator's compiled build is in use.

A test that replaces a function or method of a compiled module (``monkeypatch``) to compare a
shortcut with its plain form sees no effect in the compiled build: compiled callers call each other
directly, not through the module or class attribute. Under the build such a test runs in a child
pytest with ``FHIR_EXCHANGE_NATIVE=0`` (all its parametrizations at once) and fails if that fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_exchange import native

ROOT = Path(__file__).resolve().parent.parent
_RUNS: dict[str, subprocess.CompletedProcess[str]] = {}


def rerun_as_python(request: pytest.FixtureRequest) -> bool:
    """True when the test was run (and passed) in a pure-Python child: the caller returns then."""
    if not native.installed():
        return False
    node = request.node
    target = f"{Path(str(node.path)).relative_to(ROOT)}::{getattr(node, 'originalname', node.name)}"
    done = _RUNS.get(target)
    if done is None:
        env = {**os.environ, "FHIR_EXCHANGE_NATIVE": "0"}
        done = _RUNS[target] = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", target],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1], done.stdout[-2000:]
    return True
