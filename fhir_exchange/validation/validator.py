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

from collections.abc import Callable, Sequence
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Issue
from fhir_exchange.validation.bundle import check_bundle
from fhir_exchange.validation.datatypes import check_attachments
from fhir_exchange.validation.discriminators import check_discriminators
from fhir_exchange.validation.extensions import check_extensions
from fhir_exchange.validation.invariants import InvariantChecker
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.profile import ProfileContext, ProfileValidator
from fhir_exchange.validation.questionnaire import QuestionnaireChecker
from fhir_exchange.validation.references import Resolver, check_contained, check_narrative, check_references
from fhir_exchange.validation.shapes import ShapeBuilder
from fhir_exchange.validation.snapshot import SnapshotError, UnknownBase
from fhir_exchange.validation.structure import StructureWalker, WalkContext
from fhir_exchange.validation.terminology import Terminology
from fhir_exchange.validation.vitalsigns import check_vital_signs
from fhir_exchange.validation.xhtml import check_narratives


class Validator:
    """Validates resources against the definitions it was built with; safe to share between threads."""

    def __init__(self, definitions: Definitions, *, invariants: bool = True,
                 fetch_canonical: Callable[[str], dict[str, Any] | None] | None = None) -> None:
        """``fetch_canonical`` finds canonical resources that are not conformance resources (the
        Questionnaire of a QuestionnaireResponse), e.g. in the store; definitions are asked first."""
        self.definitions = definitions
        self.terminology = Terminology(definitions)
        self.shapes = ShapeBuilder(definitions)
        self.structure = StructureWalker(self.shapes, self.terminology)
        self.invariants = InvariantChecker(self.shapes.descendants_of_type)
        self.profiles = ProfileValidator(definitions, self.shapes, self.terminology, self.invariants)
        self.questionnaires = QuestionnaireChecker(definitions, self.terminology, fetch_canonical)
        self.check_invariants = invariants

    def validate(self, resource: dict[str, Any], *, profiles: Sequence[str] = (),
                 resource_type: str | None = None) -> list[Issue]:
        try:
            return self._validate(resource, profiles, resource_type)
        except RecursionError:
            # The walks recurse per JSON level; a document deeper than the interpreter's stack is refused
            # as a whole rather than crashing the caller (the HTTP edge refuses such bodies before this).
            return [Issue("error", "too-costly", "The resource is nested too deeply to be validated",
                          (resource_type or str(resource.get("resourceType", "Resource")),), "too-deep")]

    def _validate(self, resource: dict[str, Any], profiles: Sequence[str],
                  resource_type: str | None) -> list[Issue]:
        sink = IssueSink()
        ctx = WalkContext(sink)
        rt = self.structure.validate_resource(resource, "", ctx, expected_type=resource_type)
        if rt is None:
            return sink.result()
        resolver = Resolver(resource, ctx.resources)
        check_references(ctx.references, resolver, sink)
        check_contained(ctx.resources, ctx.references, sink)
        check_narrative(ctx.resources, sink, self._is_domain_resource)
        check_narratives(ctx.resources, sink)
        check_attachments(ctx.attachments, sink)
        pctx = ProfileContext(sink, resource, resolver.resolve, resolver.container_of)
        check_extensions(ctx.extensions, self.profiles, self.shapes, pctx)
        if self.check_invariants:
            for v in ctx.invariants:
                type_path = v.elem_path if v.type_code in ("BackboneElement", "Element") else v.type_code
                # %rootResource is the container of a contained resource, else the resource itself
                # (fhirpath.html#variables): a Bundle entry is not contained in the Bundle.
                root = resolver.container_of(v.resource)
                self.invariants.check(v.extra, v.node, v.path, type_path, v.resource, root, sink,
                                      resolver.resolver_for(v.resource))
        for url in profiles:
            self.profiles.validate_resource(resource, url, rt, pctx)
        for v in ctx.resources:
            meta = v.node.get("meta")
            declared = meta.get("profile") if isinstance(meta, dict) else None
            if isinstance(declared, list):
                for url in declared:
                    if isinstance(url, str) and url not in profiles:
                        pctx.resource = v.node
                        self.profiles.validate_resource(v.node, url, v.path, pctx)
                pctx.resource = resource
        check_vital_signs(ctx.resources, self.profiles, pctx, profiles)
        check_bundle(ctx.resources, ctx.references, resolver, sink, ctx.extensions)
        for r in ctx.resources:
            if r.node.get("resourceType") == "StructureDefinition":
                self._structure_definition(r.node, r.path, sink)
        self.questionnaires.check(ctx.resources, sink)
        return sink.result()

    def _structure_definition(self, sd: dict[str, Any], path: str, sink: IssueSink) -> None:
        """A profile must apply to its base (profiling.html#snapshot): generate its snapshot to see."""
        if sd.get("derivation") != "constraint" or not (sd.get("differential") or {}).get("element"):
            return
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
        schema = self.shapes.schema(rt)
        return schema is not None and (schema.base_definition or "").endswith("/DomainResource")
