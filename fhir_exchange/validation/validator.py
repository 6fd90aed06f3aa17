"""The validator: https://hl7.org/fhir/R4/validation.html.

``Validator(definitions).validate(resource, profiles=..., resource_type=...)`` returns the
OperationOutcome issues of one resource, sorted, without duplicates. The passes, in order:

1. structure (:mod:`structure`): the JSON against the core definition of its type — shape,
   cardinality, primitive formats, required and extensible bindings — collecting on the way the
   resources, extensions, references and invariant sites later passes need (no second JSON walk);
2. references and contained resources (:mod:`references`), narrative (:mod:`xhtml`);
3. extensions by URL (:mod:`extensions`);
4. invariants of the core definitions (:mod:`invariants`);
5. profiles: those the caller names and each resource's ``meta.profile`` (:mod:`profile`); a
   profile the server does not know is a warning, as in HAPI FHIR and Firely Server;
6. the core vital-signs profile of an Observation recording a vital sign (:mod:`vitalsigns`);
7. resource-specific rules the definitions cannot express (:mod:`bundle`, :mod:`questionnaire`,
   :mod:`discriminators` for profiles).

Definitions added at run time (``Definitions.add``) are used at once: every cache is keyed on
``definitions.generation``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import orjson

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Issue
from fhir_exchange.validation.bundle import check_bundle
from fhir_exchange.validation.datatypes import check_attachments
from fhir_exchange.validation.discriminators import check_discriminators
from fhir_exchange.validation.extensions import check_extensions
from fhir_exchange.validation.invariants import InvariantChecker, NotEvaluable, member_of_terminology
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.policy import DEFAULT_POLICY, ValidationPolicy, check_policy, filter_issues
from fhir_exchange.validation.profile import ProfileContext, ProfileValidator
from fhir_exchange.validation.questionnaire import QuestionnaireChecker
from fhir_exchange.validation.references import Resolver, check_contained, check_narrative, check_references
from fhir_exchange.validation.shapes import ShapeBuilder
from fhir_exchange.validation.snapshot import SnapshotError, UnknownBase
from fhir_exchange.validation.structure import StructureWalker, Visited, WalkContext
from fhir_exchange.validation.terminology import Terminology
from fhir_exchange.validation.vitalsigns import check_vital_signs
from fhir_exchange.validation.xhtml import check_narratives

SD_VERDICTS: Final = 256  # StructureDefinition verdicts remembered (see Validator._structure_definition)


class WalkedReferences:
    """``descendants().ofType(Reference)`` of the validated resource as the structural walk met them
    (``WalkContext.references``); any other question goes to ``general``."""

    __slots__ = ("_nodes", "general", "references", "root")

    def __init__(self, root: Any, references: list[Visited], general: Callable[[list[Any], str], list[Any]]) -> None:
        self.root = root
        self.references = references
        self.general = general
        self._nodes: list[Any] | None = None

    def find(self, items: list[Any], type_code: str) -> list[Any]:
        if type_code == "Reference" and len(items) == 1 and items[0] is self.root:
            nodes = self._nodes
            if nodes is None:
                nodes = self._nodes = [v.node for v in self.references]
            return nodes
        return self.general(items, type_code)


class Validator:
    """Validates resources against the definitions it was built with; safe to share between threads."""

    def __init__(self, definitions: Definitions, *, invariants: bool = True,
                 fetch_canonical: Callable[[str], dict[str, Any] | None] | None = None,
                 policy: ValidationPolicy = DEFAULT_POLICY) -> None:
        """``fetch_canonical`` finds canonical resources that are not conformance resources (the
        Questionnaire of a QuestionnaireResponse), e.g. in the store; definitions are asked first.
        ``policy``: stricter checks a deployment may choose (:mod:`policy`)."""
        self.definitions = definitions
        self.policy = policy
        self.terminology = Terminology(definitions)
        self.shapes = ShapeBuilder(definitions)
        self.structure = StructureWalker(self.shapes, self.terminology)
        # memberOf() asks the terminology and conformsTo() this validator, as the reference validator does.
        self.invariants = InvariantChecker(self.shapes.descendants_of_type,
                                           member_of=member_of_terminology(self.terminology),
                                           conforms_to=self._conforms_to)
        self._conforming = threading.local()  # (id(resource), url) being checked: conformsTo() recursion
        self.profiles = ProfileValidator(definitions, self.shapes, self.terminology, self.invariants,
                                         check_invariants=invariants)
        self.questionnaires = QuestionnaireChecker(definitions, self.terminology, fetch_canonical)
        self.check_invariants = invariants
        self._sd_verdicts: dict[tuple[int, str, bytes], tuple[Issue, ...]] = {}
        self._domain: dict[tuple[int, str], bool] = {}  # (generation, resource type) -> is a DomainResource

    def _conforms_to(self, resource: Mapping[str, Any], url: str) -> bool:
        """``conformsTo(url)``: the resource validates against the profile without error. A profile
        whose invariants ask the same question of the same resource again is taken to hold there
        (the outer check decides)."""
        if self.definitions.structure_definition(url) is None:
            raise NotEvaluable(f"conformsTo(): the profile {url} is not known here")
        busy: set[tuple[int, str]] = self._conforming.__dict__.setdefault("busy", set())
        key = (id(resource), url)
        if key in busy:
            return True
        busy.add(key)
        try:
            issues = self.validate(dict(resource), profiles=[url])
        finally:
            busy.discard(key)
        return not any(i.severity in ("error", "fatal") for i in issues)

    def validate(self, resource: Any, *, profiles: Sequence[str] = (),
                 resource_type: str | None = None) -> list[Issue]:
        """The issues of ``resource``, any parsed JSON value (what is not a resource is reported)."""
        try:
            return self._validate(resource, profiles, resource_type)
        except RecursionError:
            # The walks recurse per JSON level; a document deeper than the interpreter's stack is refused
            # as a whole rather than crashing the caller (the HTTP edge refuses such bodies before this).
            rt = resource.get("resourceType") if isinstance(resource, dict) else None
            return [Issue("error", "too-costly", "The resource is nested too deeply to be validated",
                          (resource_type or str(rt or "Resource"),), "too-deep")]

    def _validate(self, resource: Any, profiles: Sequence[str],
                  resource_type: str | None) -> list[Issue]:
        sink = IssueSink()
        ctx = WalkContext(sink, collect_invariants=self.check_invariants)
        rt = self.structure.validate_resource(resource, "", ctx, expected_type=resource_type)
        if rt is None:
            return sink.result()
        walk_clean = not sink.has_errors()
        resolver = Resolver(resource, ctx.resources)
        if ctx.references:
            check_references(ctx.references, resolver, sink)
        if self.policy.validate_contained:
            check_contained(ctx.resources, ctx.references, sink)
        if not self.policy.is_default:
            check_policy(self.policy, resource, rt, ctx.references, resolver, self.shapes, sink)
        check_narrative(ctx.resources, sink, self._is_domain_resource)
        check_narratives(ctx.resources, sink)
        if ctx.attachments:
            check_attachments(ctx.attachments, sink)
        pctx = ProfileContext(sink, resource, resolver.resolve, resolver.container_of)
        if walk_clean and ctx.references and not ctx.companion_references and self.check_invariants:
            # A walk without an error met every element descendants() meets, in the same order: its
            # references are descendants().ofType(Reference) of the resource (a Bundle's cx-bdl-1).
            pctx.typed_descendants = WalkedReferences(resource, ctx.references,
                                                      self.invariants.typed_descendants_or_unsupported).find
        if ctx.extensions:
            check_extensions(ctx.extensions, self.profiles, self.shapes, pctx, self.policy)
        if self.check_invariants:
            self._native_invariants(ctx, resolver, sink)
        if self.check_invariants and ctx.invariants:
            check = self.invariants.check
            # Per resource: %rootResource is the container of a contained resource, else the resource
            # itself (fhirpath.html#variables; a Bundle entry is not contained in the Bundle), and resolve().
            scopes: dict[int, tuple[dict[str, Any], Callable[[str], dict[str, Any] | None]]] = {}
            for v in ctx.invariants:
                res = v.resource
                scope = scopes.get(id(res))
                if scope is None:
                    scope = scopes[id(res)] = (resolver.container_of(res), resolver.resolver_for(res))
                type_code = v.type_code
                type_path = v.elem_path if type_code == "BackboneElement" or type_code == "Element" else type_code
                check(v.extra, v.node, v.location, type_path, res, scope[0], sink, scope[1])
        for url in profiles:
            self.profiles.validate_resource(resource, url, rt, pctx)
        for v in ctx.resources:
            node: dict[str, Any] = v.node
            meta = node.get("meta")
            declared = meta.get("profile") if isinstance(meta, dict) else None
            if isinstance(declared, list):
                # Its own name: ``url`` above is a str, and the compiled build checks that per assignment.
                for item in declared:
                    if isinstance(item, str) and item not in profiles:
                        pctx.resource = v.node
                        self.profiles.validate_resource(v.node, item, v.path, pctx)
                pctx.resource = resource
        # The passes below concern one resource type each: only those of the types present run.
        types = {v.type_code for v in ctx.resources}
        if "Observation" in types:
            check_vital_signs(ctx.resources, self.profiles, pctx, profiles)
        if "Bundle" in types:
            check_bundle(ctx.resources, ctx.references, resolver, sink, ctx.extensions)
        if "StructureDefinition" in types:
            for r in ctx.resources:
                if r.node.get("resourceType") == "StructureDefinition":
                    self._structure_definition(r.node, r.path, sink)
        if "QuestionnaireResponse" in types:
            self.questionnaires.check(ctx.resources, sink)
        return filter_issues(self.policy, sink.result())

    def _native_invariants(self, ctx: WalkContext, resolver: Resolver, sink: IssueSink) -> None:
        """The invariants the walk collected no site for (``Shape.native``: ref-1, bdl-*), on the nodes
        where it would have: every Reference it collected, every resource, and the objects of a
        resource's direct children that have them (Bundle.entry), each a non-empty object as there."""
        checker = self.invariants  # its method called directly (compiled), not through a bound method
        resolver_for = resolver.resolver_for
        reference = self.shapes.type_shape("Reference")
        if reference is not None and reference.native:
            natives = reference.native
            for v in ctx.references:
                res = v.resource
                root = resolver.container_of(res)
                checker.check_native(natives, v.node, v.location, "Reference", res, root, sink, resolver_for)
        for r in ctx.resources:
            shape = self.shapes.concrete_resource_shape(r.type_code)
            if shape is None:
                continue
            res = r.node
            root = resolver.container_of(res)
            if shape.native:
                checker.check_native(shape.native, res, r.location, r.type_code, res, root, sink, resolver_for)
            for key, is_array, child in self.shapes.native_children(shape):
                value = res.get(key)
                if not is_array:
                    if type(value) is dict and value:
                        checker.check_native(child.native, value, (r.location, key), child.name, res, root, sink,
                                             resolver_for)
                elif type(value) is list:
                    for i, item in enumerate(value):
                        if type(item) is dict and item:
                            checker.check_native(child.native, item, (r.location, key, i), child.name, res, root,
                                                 sink, resolver_for)

    def _structure_definition(self, sd: dict[str, Any], path: str, sink: IssueSink) -> None:
        """A profile must apply to its base (profiling.html#snapshot): generate its snapshot to see.

        The verdict is a function of the profile's JSON and the definitions: remembered per
        generation (generating a snapshot costs more than validating many resources)."""
        if sd.get("derivation") != "constraint" or not (sd.get("differential") or {}).get("element"):
            return
        try:
            key = (self.definitions.generation, path, orjson.dumps(sd))
        except TypeError:  # not plain JSON (a float subclass...): not remembered
            self._check_structure_definition(sd, path, sink)
            return
        known = self._sd_verdicts.get(key)
        if known is None:
            fresh = IssueSink()
            self._check_structure_definition(sd, path, fresh)
            known = tuple(fresh.since(0))
            if len(self._sd_verdicts) >= SD_VERDICTS:
                self._sd_verdicts.clear()
            self._sd_verdicts[key] = known
        sink.extend(list(known))

    def _check_structure_definition(self, sd: dict[str, Any], path: str, sink: IssueSink) -> None:
        gen = self.profiles.snapshots
        url = sd.get("url", "")
        try:
            snapshot = gen.generate(sd)
        except UnknownBase as e:
            sink.warning("not-found", MsgId.PROFILE_UNKNOWN, f"The profile was not checked against its base: {e}",
                         f"{path}.baseDefinition")
            return
        except SnapshotError as e:
            sink.error("invalid", MsgId.PROFILE_UNUSABLE, f"The profile cannot be applied to its base: {e}",
                       f"{path}.differential")
            return
        finally:
            problems = gen.problems.pop(url, [])
        for problem in problems:
            sink.error("invalid", MsgId.PROFILE_UNUSABLE, f"The profile cannot be applied to its base: {problem}",
                       f"{path}.differential")
        check_discriminators(sd, snapshot, path, self.shapes, sink)

    def _is_domain_resource(self, rt: str) -> bool:
        key = (self.definitions.generation, rt)
        hit = self._domain.get(key)
        if hit is None:
            schema = self.shapes.schema(rt)
            hit = schema is not None and (schema.base_definition or "").endswith("/DomainResource")
            if len(self._domain) >= 1024:  # resource types come from instances: bounded
                self._domain.clear()
            self._domain[key] = hit
        return hit
