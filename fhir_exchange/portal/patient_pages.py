"""The patient pages: register and find patients, record and withdraw consents."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from fhir_exchange.consult import model
from fhir_exchange.errors import FhirError
from fhir_exchange.portal import actions, consults
from fhir_exchange.portal import resources as build
from fhir_exchange.portal.page import PREFIX, WITHHELD, Page, Refused, Views


class PatientPages(Views):
    """The patient and consent handlers of :class:`~fhir_exchange.portal.web.Portal`."""

    # -- patients and consents -------------------------------------------------------------------

    async def patients(self, page: Page, error: str = "", status: int = 200) -> Response:
        query = page.request.query_params.get("q", "").strip()[:100]
        found: dict[str, dict[str, Any]] = {}
        if query:
            for param in ("name", "identifier"):
                for p in (await page.client.search("Patient", [(param, query)], limit=50)).matches:
                    found.setdefault(str(p["id"]), p)
        else:
            for p in (await page.client.search("Patient", [("_sort", "-_lastUpdated")], limit=50)).matches:
                found.setdefault(str(p["id"]), p)
        return self.render(page, "patients.html", status=status, query=query, patients=list(found.values()),
                           error=error, genders=build.GENDERS, form=page.form, mrn=consults.mrn,
                           name=consults.human_name)

    async def register_patient(self, page: Page) -> Response:
        try:
            patient_id = await actions.register_patient(page.client, page.me, name=page.field("name"),
                                                        mrn=page.field("mrn"), gender=page.field("gender"),
                                                        birth_date=page.field("birth_date"))
        except actions.ActionError as err:
            return await self.patients(page, page.t(err.key, **err.params), 422)
        except FhirError as err:
            if err.status >= 500:
                raise
            return await self.patients(page, page.t("error.refused", reason=err.diagnostics), err.status)
        return self.redirect(f"{PREFIX}/patients/{patient_id}")

    async def patient(self, page: Page, error: str = "", status: int = 200) -> Response:
        patient_id = page.request.path_params["id"]
        patient = await page.client.read(f"Patient/{patient_id}") if consults._plain_id(patient_id) else None
        if patient is None:
            raise Refused(404, "notfound.title", "notfound.text")
        today = self.now()[:10]
        consents = (await page.client.search("Consent", [("patient", f"Patient/{patient_id}")])).matches
        requests = (await page.client.search("ServiceRequest", [("subject", f"Patient/{patient_id}"),
                                                                ("_sort", "-authored")], limit=100)).matches
        hubs = await consults.hubs(page.client, page.me, self.departments())
        directory = consults.Directory(page.client)
        recipients = {c["id"]: [await directory.name(r) for r in model.consent_recipients(c)] for c in consents}
        summary = await self.summary(page.client, patient_id)
        return self.render(page, "patient.html", status=status, patient=patient, mrn=consults.mrn(patient),
                           name=consults.human_name(patient), consents=consents, recipients=recipients,
                           state=lambda c: consults.consent_state(c, today), requests=requests, hubs=hubs,
                           summary=summary, error=error, today=today, department=consults.department,
                           own=_owned_by(patient, page.me.institution))

    async def record_consent(self, page: Page) -> Response:
        patient_id = page.request.path_params["id"]
        uploads = page.files("form")
        try:
            form = await self.upload(uploads[0]) if uploads else None
            await actions.record_consent(page.client, page.me, patient_id=patient_id,
                                         recipient=page.field("recipient"), start=page.field("start"),
                                         end=page.field("end"), signed=page.field("signed"), form=form,
                                         now=self.now(), policy=build.namespace(page.me.institution, "consent-policy"),
                                         withhold=WITHHELD if page.field("withhold_documents") else ())
        except actions.ActionError as err:
            return await self.patient(page, page.t(err.key, **err.params), 422)
        return self.redirect(f"{PREFIX}/patients/{patient_id}")

    async def withdraw_consent(self, page: Page) -> Response:
        consent_id = page.request.path_params["id"]
        try:
            await actions.withdraw_consent(page.client, page.me, consent_id)
        except actions.ActionError:
            raise Refused(404, "notfound.title", "notfound.text") from None
        consent = await page.client.read(f"Consent/{consent_id}")
        patient = model.reference((consent or {}).get("patient")) or ""
        return self.redirect(f"{PREFIX}/patients/{patient.split('/', 1)[-1]}")


def _owned_by(patient: dict[str, Any], institution: str) -> bool:
    for ident in patient.get("identifier") or []:
        if str(ident.get("system") or "").startswith(f"urn:fhir-exchange:portal:{institution}:"):
            return True
    return model.reference(patient.get("managingOrganization")) == f"Organization/{institution}"

