"""FHIR NPM package loader (https://confluence.hl7.org/display/FHIR/NPM+Package+Specification).

A package is a ``.tgz`` or a folder holding ``package/package.json`` and resource files. A ``.tgz`` is
unpacked once into the package cache (``<cache>/packages/<name>#<version>``), as the HL7 tooling does
with ``~/.fhir/packages``, so that start-up reads only the ``.index.json`` and resources load lazily.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class IndexEntry:
    filename: str
    resource_type: str
    id: str | None
    url: str | None
    version: str | None
    type: str | None  # StructureDefinition.type
    kind: str | None


@dataclass(slots=True)
class Package:
    name: str
    version: str
    folder: Path  # the folder that holds package.json and the resources
    entries: list[IndexEntry]
    manifest: dict[str, Any]
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict)

    def load(self, filename: str) -> dict[str, Any]:
        res = self._cache.get(filename)
        if res is None:
            res = orjson.loads((self.folder / filename).read_bytes())
            self._cache[filename] = res
        return res

    def resources(self, resource_type: str | None = None) -> Iterator[dict[str, Any]]:
        for e in self.entries:
            if resource_type is None or e.resource_type == resource_type:
                yield self.load(e.filename)


def load_package(path: Path | str, cache_dir: Path | None = None) -> Package:
    path = Path(path)
    if path.is_dir():
        # A package folder, or a plain folder of resources such as profiles/.
        folder = path / "package" if (path / "package" / "package.json").exists() else path
        return _open_folder(folder)
    if not path.exists():
        raise FileNotFoundError(f"FHIR package not found: {path}")
    cache = (cache_dir or Path(tempfile.gettempdir()) / "fhir-exchange-cache") / "packages"
    return _open_folder(_unpack(path, cache))


def _unpack(tgz: Path, cache: Path) -> Path:
    stat = tgz.stat()
    key = hashlib.sha1(f"{tgz.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache / f"{tgz.name.removesuffix('.tgz')}-{key}"
    if (target / "package" / ".fhir-exchange-complete").exists():
        return target / "package"
    cache.mkdir(parents=True, exist_ok=True)
    # Unpack beside the target and rename, so concurrent start-ups never see a half-written package.
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache))
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        folder = tmp / "package"
        if not folder.exists():  # some packages lack the leading package/ folder
            folder.mkdir()
            for child in list(tmp.iterdir()):
                if child != folder:
                    child.rename(folder / child.name)
        _write_index(folder)
        (folder / ".fhir-exchange-complete").touch()
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target / "package"


INDEX_NAME = ".fhir-exchange-index.json"


def _index_rows(folder: Path) -> list[dict[str, Any]]:
    """Our own index: the NPM ``.index.json`` lacks StructureDefinition.type and derivation."""
    rows = []
    for f in sorted(folder.glob("*.json")):
        if f.name == "package.json" or f.name.startswith("."):
            continue
        try:
            res = orjson.loads(f.read_bytes())
        except orjson.JSONDecodeError:
            continue
        if not isinstance(res, dict) or "resourceType" not in res:
            continue
        rows.append(
            {
                "filename": f.name,
                "resourceType": res.get("resourceType"),
                "id": res.get("id"),
                "url": res.get("url"),
                "version": res.get("version"),
                "type": res.get("type") if res.get("resourceType") == "StructureDefinition" else None,
                "kind": res.get("kind"),
            }
        )
    return rows


def _write_index(folder: Path) -> None:
    (folder / INDEX_NAME).write_bytes(orjson.dumps({"files": _index_rows(folder)}))


def _open_folder(folder: Path) -> Package:
    manifest_file = folder / "package.json"
    manifest = orjson.loads(manifest_file.read_bytes()) if manifest_file.exists() else {"name": folder.name}
    index_file = folder / INDEX_NAME
    # Only unpacked .tgz packages in the cache carry a persisted index (they never change); a source
    # folder such as profiles/ is indexed afresh at each start so that edits are never missed.
    if index_file.exists() and (folder / ".fhir-exchange-complete").exists():
        rows = orjson.loads(index_file.read_bytes())["files"]
    else:
        rows = _index_rows(folder)
    entries = [
        IndexEntry(r["filename"], r["resourceType"], r.get("id"), r.get("url"), r.get("version"),
                   r.get("type"), r.get("kind"))
        for r in rows
    ]
    return Package(manifest.get("name", folder.name), manifest.get("version", ""), folder, entries, manifest)
