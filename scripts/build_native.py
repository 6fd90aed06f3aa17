"""Compile the validator's hot modules with mypyc into ``.native/`` (run by ``./dev``).

Every write is validated, so the validator's walk sets the ingest rate (issue 15). Its modules are
plain typed Python; mypyc (part of mypy, https://mypyc.readthedocs.io) compiles them to C
extensions that run the same code without the interpreter's per-operation dispatch. The build is
optional: without it, or when a source changed since it was built, :mod:`fhir_exchange.native`
leaves Python to import the ``.py`` files, so an edited module is never shadowed by a stale build.

The modules are compiled as one group (they call each other natively) from a copy of the sources,
outside the checkout: the build leaves nothing beside the ``.py`` files. ``.native/manifest.json``
records the SHA-256 of each compiled source, the interpreter's extension suffix and mypy's version.

Run: ``.venv/bin/python scripts/build_native.py [--force]``; it does nothing when the build is current.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.machinery
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_exchange.native import GROUP, MANIFEST, NATIVE_DIR, NATIVE_MODULES, source_digest  # noqa: E402

# The mypy options of the compiled group: those of [tool.mypy] that matter to code generation.
MYPY_CONFIG = """[mypy]
python_version = 3.11
ignore_missing_imports = True
follow_imports = silent
"""

# mypyc keeps one freed instance of each nested function's class for reuse, and does not clear the
# instance's ``__dict__`` when it does: a new closure came back carrying the attributes set on a freed
# one (the FHIRPath back-end tags its closures with what later compilation steps read: an ``or`` chain
# picked up another expression's terms). The build turns that reuse off for every class that has a
# ``__dict__``, in the generated C, and fails when it finds none to turn off (mypyc changed: look again).
# ``tests/unit/test_native.py`` checks the compiled closures.
SETUP = """
import re
import sys
from pathlib import Path
from setuptools import setup
from mypyc.build import mypycify

extensions = mypycify(["--config-file", "mypy.ini", *sys.argv[1:]], group_name={group!r}, opt_level="3")
patched = 0
for source in Path("build").glob("*.c"):
    text = source.read_text()
    for prefix in re.findall(r'PyMemberDef (\\w+)_members\\[\\] = \\{{\\s*\\{{"__dict__"', text):
        reuse = "if (" + prefix + "_free_instance == NULL) {{"
        if reuse in text:
            text = text.replace(reuse, "if (0) {{  /* fhir-exchange: no reuse of instances with a __dict__ */", 1)
            patched += 1
    source.write_text(text)
if not patched:
    sys.exit("build_native: no reused instance with a __dict__ found in mypyc's output")
setup(name="fhir_exchange_native", script_args=["build_ext", "--inplace"], ext_modules=extensions)
"""


def current_manifest(root: Path) -> dict[str, object]:
    import mypy.version

    return {
        "extension_suffix": importlib.machinery.EXTENSION_SUFFIXES[0],
        "mypy": mypy.version.__version__,
        "group": GROUP,
        "setup": hashlib.sha256(SETUP.encode()).hexdigest(),
        "modules": {name: source_digest(root, name) for name in NATIVE_MODULES},
    }


def build(root: Path, out: Path, keep_c: Path | None = None) -> None:
    wanted = current_manifest(root)
    with tempfile.TemporaryDirectory(prefix="fhir-exchange-native-") as tmp:
        work = Path(tmp)
        # The whole package is copied: mypyc type-checks the compiled modules against what they import.
        shutil.copytree(root / "fhir_exchange", work / "fhir_exchange",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "packages", "*.tgz", "*.json"))
        (work / "mypy.ini").write_text(MYPY_CONFIG)
        (work / "setup.py").write_text(SETUP.format(group=GROUP))
        paths = [name.replace(".", "/") + ".py" for name in NATIVE_MODULES]
        done = subprocess.run([sys.executable, "setup.py", *paths], cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            raise SystemExit(f"build_native: mypyc failed (exit {done.returncode}); the server runs as pure Python")
        if keep_c is not None:  # mypyc's C, to read what a line of Python became
            shutil.rmtree(keep_c, ignore_errors=True)
            shutil.copytree(work / "build", keep_c, ignore=shutil.ignore_patterns("*.o", "temp.*"))
        staged = Path(tmp) / "staged"
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        for name in NATIVE_MODULES:
            rel = Path(name.replace(".", "/") + suffix)
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / rel, staged / rel)
        for lib in work.glob(f"{GROUP}__mypyc*{suffix}"):
            shutil.copy2(lib, staged / lib.name)
        (staged / MANIFEST).write_text(json.dumps(wanted, indent=1, sort_keys=True))
        # Replaced whole, so a reader never sees half of an old build and half of a new one.
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(staged), str(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when the build is current")
    ap.add_argument("--check", action="store_true", help="only say (exit status 0 or 1) whether it is current")
    ap.add_argument("--keep-c", type=Path, metavar="DIR", help="also copy mypyc's generated C into DIR (rebuilds)")
    args = ap.parse_args()
    out = ROOT / NATIVE_DIR
    manifest = out / MANIFEST
    current = False
    if manifest.exists():
        with contextlib.suppress(ValueError):
            current = json.loads(manifest.read_text()) == current_manifest(ROOT)
    if args.check:
        return 0 if current else 1
    if current and not args.force and args.keep_c is None:
        return 0
    start = time.monotonic()
    print(f"build_native: compiling {len(NATIVE_MODULES)} modules with mypyc into {NATIVE_DIR}/ ...", flush=True)
    build(ROOT, out, args.keep_c)
    print(f"build_native: done in {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
