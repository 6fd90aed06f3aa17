"""The compiled build of the validator's hot modules (fhir_exchange/native.py): used only when current."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange import native
from fhir_exchange.definitions import Definitions
from fhir_exchange.validation import Validator

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def fake_build(root: Path, digests: dict[str, str]) -> None:
    """A build directory with empty extension files and a manifest of the given digests."""
    out = root / native.NATIVE_DIR
    for name in native.NATIVE_MODULES:
        f = out / (name.replace(".", "/") + SUFFIX)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")
    (out / f"{native.GROUP}__mypyc{SUFFIX}").write_bytes(b"")
    (out / native.MANIFEST).write_text(json.dumps({"extension_suffix": SUFFIX, "modules": digests}))


@pytest.fixture()
def sources(tmp_path: Path) -> Path:
    for name in native.NATIVE_MODULES:
        rel = Path(name.replace(".", "/") + ".py")
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


def test_a_current_build_is_found_with_its_group_library(sources: Path) -> None:
    fake_build(sources, {n: native.source_digest(sources, n) for n in native.NATIVE_MODULES})
    files = native.current_build(sources)
    assert files is not None
    assert set(files) == {*native.NATIVE_MODULES, f"{native.GROUP}__mypyc"}


def test_an_edited_source_makes_the_whole_build_stale(sources: Path) -> None:
    fake_build(sources, {n: native.source_digest(sources, n) for n in native.NATIVE_MODULES})
    edited = sources / (native.NATIVE_MODULES[-1].replace(".", "/") + ".py")
    edited.write_text(edited.read_text() + "\n# an edit\n")
    assert native.current_build(sources) is None


def test_a_build_for_another_interpreter_or_module_set_is_not_used(sources: Path) -> None:
    digests = {n: native.source_digest(sources, n) for n in native.NATIVE_MODULES}
    fake_build(sources, digests)
    manifest = sources / native.NATIVE_DIR / native.MANIFEST
    manifest.write_text(json.dumps({"extension_suffix": ".cpython-39-x86_64-linux-gnu.so", "modules": digests}))
    assert native.current_build(sources) is None
    manifest.write_text(json.dumps({"extension_suffix": SUFFIX, "modules": dict(list(digests.items())[1:])}))
    assert native.current_build(sources) is None
    manifest.write_text("{not json")
    assert native.current_build(sources) is None


def test_no_build_means_pure_python(tmp_path: Path) -> None:
    assert native.current_build(tmp_path) is None


def test_native_off_runs_the_python_sources() -> None:
    env = {**os.environ, "FHIR_EXCHANGE_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", "import fhir_exchange.validation.structure as s; print(s.__file__)"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("structure.py")


@pytest.mark.skipif(not os.environ.get("FHIR_EXCHANGE_REQUIRE_NATIVE"), reason="the build is optional outside CI")
def test_ci_runs_the_compiled_build() -> None:
    v = Validator(Definitions.load())  # imports the compiled modules
    for name in native.NATIVE_MODULES:
        __import__(name)
    assert native.active(), {n: sys.modules[n].__file__ for n in native.NATIVE_MODULES}
    issues = v.validate({"resourceType": "Patient", "gender": "other-ish", "birthDate": "1990-13-01"})
    assert {i.expression[0] for i in issues if i.severity == "error"} >= {"Patient.gender", "Patient.birthDate"}


def test_a_new_closure_never_carries_the_attributes_of_a_freed_one() -> None:
    """mypyc reuses a freed instance of a nested function's class without clearing its ``__dict__``;
    the build turns that reuse off (scripts/build_native.py). The FHIRPath back-end reads attributes
    of its closures back while compiling, so a stale one would change what an expression means."""
    import gc

    from fhir_exchange.fhir.fhirpath import compiled_values

    def plain(c: list[Any], env: dict[str, Any]) -> list[Any]:
        return c

    for _ in range(3):
        first = compiled_values.truth(plain)  # an untagged closure of truth()
        compiled_values.tag(first, chain_terms=("stale",), const=[True])
        del first
        gc.collect()
        second = compiled_values.truth(plain)
        assert getattr(second, "chain_terms", None) is None and getattr(second, "const", None) is None
    # The same expression compiled before and after many others means the same.
    from fhir_exchange.fhir.fhirpath.compiled import compile_fast

    before = compile_fast("a = 1 or b = 2")
    for i in range(200):
        compile_fast(f"x{i} = {i} or y{i}.exists()")
        gc.collect()
    after = compile_fast("a = 1 or b = 2")
    for node in ({"a": 1}, {"b": 2}, {"a": 3, "b": 3}, {}):
        assert before([node], {}) == after([node], {})
