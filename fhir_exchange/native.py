"""The compiled (mypyc) build of the validator's hot modules, used only when it is current.

``scripts/build_native.py`` (run by ``./dev``) compiles :data:`NATIVE_MODULES` into ``.native/``
beside the package, with a manifest of the SHA-256 of each source. :func:`install` puts a finder in
front of Python's import system that loads those extension modules instead of the ``.py`` files, but
only when every compiled source is unchanged, the interpreter's extension suffix matches and
``FHIR_EXCHANGE_NATIVE`` is not ``0``: otherwise nothing is installed and the ``.py`` files run,
so a module being edited is never shadowed by a stale build. All or nothing: the modules are one
mypyc group that calls itself natively.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

NATIVE_DIR = ".native"
MANIFEST = "manifest.json"
GROUP = "fhir_exchange_native"

# The walk of every write: structure, profiles, invariants and the compiled FHIRPath back-end.
NATIVE_MODULES: tuple[str, ...] = (
    "fhir_exchange.validation.structure",
    "fhir_exchange.validation.structure_compile",
    "fhir_exchange.validation.primitives",
    "fhir_exchange.validation.shapes",
    "fhir_exchange.validation.bindings",
    "fhir_exchange.validation.values",
    "fhir_exchange.validation.profile",
    "fhir_exchange.validation.profile_compile",
    "fhir_exchange.validation.references",
    "fhir_exchange.validation.invariants",
    "fhir_exchange.validation.validator",
    "fhir_exchange.validation.schema",
    "fhir_exchange.validation.profile_context",
    "fhir_exchange.validation.issues",
    "fhir_exchange.validation.slicing",
    "fhir_exchange.validation.bundle",
    "fhir_exchange.validation.datatypes",
    "fhir_exchange.validation.extensions",
    "fhir_exchange.validation.native_invariants",
    "fhir_exchange.validation.profile_schema_cache",
    "fhir_exchange.fhir.fhirpath.compiled",
    "fhir_exchange.fhir.fhirpath.compiled_values",
    "fhir_exchange.fhir.fhirpath.compiled_operators",
    "fhir_exchange.fhir.fhirpath.compiled_functions",
    "fhir_exchange.fhir.fhirpath.compiled_typed",
)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def source_digest(root: Path, module: str) -> str:
    return hashlib.sha256((root / (module.replace(".", "/") + ".py")).read_bytes()).hexdigest()


class NativeFinder:
    """Finds the compiled modules (and their group's shared library) in the build directory."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def current_build(root: Path = PACKAGE_ROOT) -> dict[str, Path] | None:
    """Module name → extension file of the build in ``root/.native``, or None if absent or stale."""
    directory = root / NATIVE_DIR
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    modules = manifest.get("modules") if isinstance(manifest, dict) else None
    if manifest.get("extension_suffix") != suffix or not isinstance(modules, dict) \
            or set(modules) != set(NATIVE_MODULES):
        return None
    files: dict[str, Path] = {}
    for name, digest in modules.items():
        try:
            if source_digest(root, name) != digest:
                return None
        except OSError:
            return None
        file = directory / (name.replace(".", "/") + suffix)
        if not file.is_file():
            return None
        files[name] = file
    libs = list(directory.glob(f"{GROUP}__mypyc*{suffix}"))
    if len(libs) != 1:
        return None
    files[f"{GROUP}__mypyc"] = libs[0]
    return files


def install(root: Path = PACKAGE_ROOT) -> bool:
    """Load the compiled modules from now on when the build is current; True if it is."""
    if os.environ.get("FHIR_EXCHANGE_NATIVE", "1") == "0":
        return False
    if any(isinstance(f, NativeFinder) for f in sys.meta_path):
        return True
    files = current_build(root)
    if files is None or any(name in sys.modules for name in NATIVE_MODULES):
        return False
    sys.meta_path.insert(0, NativeFinder(files))
    return True


def installed() -> bool:
    """Whether this process loads the compiled build (:func:`install` found it current)."""
    return any(isinstance(f, NativeFinder) for f in sys.meta_path)


def active() -> bool:
    """Whether the validator's modules run compiled in this process (it imports those not yet imported)."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return all(str(getattr(importlib.import_module(name), "__file__", "")).endswith(suffix) for name in NATIVE_MODULES)
