"""The one holder of conformance resources: no globals, built by the composition root.

Canonical resolution follows https://hl7.org/fhir/R4/references.html#canonical: ``url|version`` picks
a version, a bare ``url`` the latest loaded. Resources written to the server at run time (``add``)
take precedence over packages, as in HAPI FHIR and Firely Server.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from fhir_exchange.definitions.package import Package, load_package

T = TypeVar("T")

PACKAGES_DIR = Path(__file__).resolve().parent.parent / "packages"
CORE_PACKAGE = PACKAGES_DIR / "hl7.fhir.r4.core-4.0.1.tgz"
# KR Core (HL7 Korea, CC0): the consult profiles derive from its Patient, Organization, Practitioner.
BUNDLED_PACKAGES = (CORE_PACKAGE, PACKAGES_DIR / "hl7.fhir.kr.core-2.0.0.tgz")
CONFORMANCE_TYPES = frozenset(
    {
        "StructureDefinition",
        "SearchParameter",
        "ValueSet",
        "CodeSystem",
        "CompartmentDefinition",
        "OperationDefinition",
        "ConceptMap",
        "NamingSystem",
        "ImplementationGuide",
        "CapabilityStatement",
        # Not conformance in the spec's sense, but a canonical resource the validator needs at once
        # (QuestionnaireResponse.questionnaire).
        "Questionnaire",
    }
)


def _stored_version(resource: dict[str, Any]) -> tuple[Any, Any]:
    meta = resource.get("meta")
    return (meta.get("versionId"), meta.get("lastUpdated")) if isinstance(meta, dict) else (None, None)


def _version_key(v: str | None) -> tuple[Any, ...]:
    parts: list[Any] = []
    for p in (v or "").replace("-", ".").split("."):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return tuple(parts)


class Definitions:
    def __init__(self, packages: Iterable[Package] = ()) -> None:
        self.packages: list[Package] = []
        self._lock = threading.RLock()
        # url -> [(version, loader)]
        self._by_url: dict[str, list[tuple[str | None, Package | None, str | dict[str, Any]]]] = defaultdict(list)
        self._by_type_id: dict[tuple[str, str], tuple[Package | None, str | dict[str, Any]]] = {}
        self._sd_by_type: dict[str, str] = {}  # type name -> base definition url
        self._search_params_cache: dict[str, list[dict[str, Any]]] | None = None
        self._resource_types: list[str] | None = None
        self._resource_type_names: frozenset[str] | None = None
        # (package, filename) -> resourceType, so iter() parses only the files of the type it wants.
        self._file_types: dict[tuple[int, str], str] = {}
        self.generation = 0  # bumped on every change, so derived caches know when to rebuild
        self._derived: dict[str, tuple[int, Any]] = {}
        for p in packages:
            self.add_package(p)

    @classmethod
    def load(cls, paths: Iterable[Path | str] = (), *, cache_dir: Path | None = None,
             include_core: bool = True) -> Definitions:
        pkgs: list[Package] = []
        if include_core:
            pkgs.extend(load_package(p, cache_dir) for p in BUNDLED_PACKAGES)
        for p in paths:
            pkgs.append(load_package(p, cache_dir))
        return cls(pkgs)

    # -- registration -------------------------------------------------------------------------

    def add_package(self, pkg: Package) -> None:
        with self._lock:
            self.packages.append(pkg)
            for e in pkg.entries:
                if e.resource_type not in CONFORMANCE_TYPES:
                    continue
                self._file_types[(id(pkg), e.filename)] = e.resource_type
                if e.url:
                    self._by_url[e.url].append((e.version, pkg, e.filename))
                if e.id:
                    self._by_type_id[(e.resource_type, e.id)] = (pkg, e.filename)
                if e.resource_type == "StructureDefinition" and e.type and e.url:
                    self._note_base_sd(e.type, e.url)
            self._changed()

    def add(self, resource: dict[str, Any]) -> None:
        """Register a conformance resource written to the server; usable at once. Adding the version
        already registered changes nothing (the change feed replays what this process wrote)."""
        rt = resource.get("resourceType")
        if rt not in CONFORMANCE_TYPES:
            return
        with self._lock:
            known = self._by_type_id.get((rt, resource.get("id") or ""))
            if known is not None and known[0] is None and isinstance(known[1], dict) and \
                    _stored_version(known[1]) == _stored_version(resource) != (None, None):
                return
            url = resource.get("url")
            if url:
                versions = self._by_url[url]
                versions[:] = [v for v in versions if not (v[1] is None and v[0] == resource.get("version"))]
                versions.append((resource.get("version"), None, resource))
            if resource.get("id"):
                self._by_type_id[(rt, resource["id"])] = (None, resource)
            self._changed()

    def remove(self, resource: dict[str, Any]) -> None:
        """Forget a conformance resource written to the server (it was deleted); packages stay."""
        with self._lock:
            url = resource.get("url")
            if isinstance(url, str) and url in self._by_url:
                kept = [v for v in self._by_url[url] if v[1] is not None
                        or not isinstance(v[2], dict) or v[2].get("id") != resource.get("id")]
                if kept:
                    self._by_url[url] = kept
                else:
                    del self._by_url[url]
            key = (str(resource.get("resourceType")), str(resource.get("id")))
            if key in self._by_type_id and self._by_type_id[key][0] is None:
                del self._by_type_id[key]
            self._changed()

    def package_of(self, url: str) -> str | None:
        """``name#version`` of the loaded package that defines the canonical ``url`` (None: no package
        does). Such canonicals belong to their package: the server never lets a write override them."""
        with self._lock:
            for _version, pkg, _ref in self._by_url.get(url, ()):
                if pkg is not None:
                    return f"{pkg.name}#{pkg.version}"
        return None

    def derived(self, key: str, build: Callable[[], T]) -> T:
        """A value derived from the definitions (search parameter tables, terminology), built once per
        :attr:`generation` and dropped when the definitions change."""
        with self._lock:
            hit = self._derived.get(key)
            if hit is not None and hit[0] == self.generation:
                return hit[1]
            generation = self.generation
        value = build()
        with self._lock:
            self._derived[key] = (generation, value)
        return value

    def _note_base_sd(self, type_name: str, url: str) -> None:
        if url == f"http://hl7.org/fhir/StructureDefinition/{type_name}":
            self._sd_by_type[type_name] = url

    def _changed(self) -> None:
        self._search_params_cache = None
        self._resource_types = None
        self._resource_type_names = None
        self.generation += 1

    # -- lookup -------------------------------------------------------------------------------

    @staticmethod
    def _materialise(entry: tuple[Package | None, str | dict[str, Any]]) -> dict[str, Any]:
        pkg, ref = entry
        if isinstance(ref, dict):
            return ref
        assert pkg is not None
        return pkg.load(ref)

    def resolve(self, canonical: str) -> dict[str, Any] | None:
        """The conformance resource with this canonical URL (``url`` or ``url|version``)."""
        url, _, version = canonical.partition("|")
        with self._lock:
            candidates = self._by_url.get(url)
            if not candidates:
                return None
            if version:
                matching = [c for c in candidates if c[0] == version]
                if not matching:
                    # "1.0" may name "1.0.x" (canonical.html#versions): take the latest of the prefix.
                    matching = [c for c in candidates if (c[0] or "").startswith(version + ".")]
                if not matching:
                    return None
                candidates = matching
            # Server-side additions win over packages; then the highest version.
            best = max(candidates, key=lambda c: (c[1] is None, _version_key(c[0])))
        return self._materialise((best[1], best[2]))

    def get(self, resource_type: str, id: str) -> dict[str, Any] | None:
        entry = self._by_type_id.get((resource_type, id))
        return None if entry is None else self._materialise(entry)

    def iter(self, resource_type: str) -> Iterator[dict[str, Any]]:
        """Every loaded resource of a conformance type (latest version per URL)."""
        with self._lock:
            urls = list(self._by_url.items())
        for _url, versions in urls:
            best = max(versions, key=lambda c: (c[1] is None, _version_key(c[0])))
            pkg, ref = best[1], best[2]
            rt = ref.get("resourceType") if isinstance(ref, dict) else self._file_types.get((id(pkg), ref))
            if rt == resource_type:
                yield self._materialise((pkg, ref))

    def structure_definition(self, type_or_url: str) -> dict[str, Any] | None:
        if "/" in type_or_url or ":" in type_or_url:
            return self.resolve(type_or_url)
        url = self._sd_by_type.get(type_or_url)
        return self.resolve(url) if url else None

    def is_resource_type(self, name: str) -> bool:
        names = self._resource_type_names
        if names is None or self._resource_types is None:
            names = self._resource_type_names = frozenset(self.resource_types())
        return name in names

    def resource_types(self) -> list[str]:
        """Concrete resource types defined by the core package (kind=resource, not abstract)."""
        if self._resource_types is None:
            names = []
            for pkg in self.packages:
                for e in pkg.entries:
                    if (e.resource_type == "StructureDefinition" and e.kind == "resource" and e.type
                            and e.url == f"http://hl7.org/fhir/StructureDefinition/{e.type}"):
                        sd = pkg.load(e.filename)
                        if not sd.get("abstract") and sd.get("derivation") != "constraint":
                            names.append(e.type)
            self._resource_types = sorted(set(names))
        return self._resource_types

    def search_parameters(self, resource_type: str) -> list[dict[str, Any]]:
        """SearchParameters whose ``base`` includes this type, or Resource/DomainResource."""
        cache = self._search_params_cache
        if cache is None:
            cache = defaultdict(list)
            for sp in self.iter("SearchParameter"):
                for base in sp.get("base", []):
                    cache[base].append(sp)
            self._search_params_cache = cache
        out = list(cache.get(resource_type, ()))
        if resource_type not in ("Resource", "DomainResource"):
            seen = {sp.get("code") for sp in out}
            for base in ("DomainResource", "Resource"):
                out.extend(sp for sp in cache.get(base, ()) if sp.get("code") not in seen)
        return out

    def compartment_definition(self, code: str) -> dict[str, Any] | None:
        for cd in self.iter("CompartmentDefinition"):
            if cd.get("code") == code:
                return cd
        return None
