// The patient's consent to disclose to the consultant institution for treatment (IHE PCF).

Invariant: cx-con-1
Description: "Consent.category is LOINC 59284-0 Patient Consent or 64292-6 Release of information consent (IHE PCF)."
Expression: "category.coding.where(system = 'http://loinc.org' and (code = '59284-0' or code = '64292-6')).exists()"
Severity: #error

Invariant: cx-con-2
Description: "The permit provision's purpose is TREAT from v3-ActReason (IHE PCF)."
Expression: "provision.purpose.where(system = 'http://terminology.hl7.org/CodeSystem/v3-ActReason' and code = 'TREAT').exists()"
Severity: #error

Invariant: cx-con-3
Description: "The provision names the consultant as recipient: an actor with a reference and role IRCP from v3-ParticipationType (IHE PCF)."
Expression: "provision.actor.where(role.coding.where(system = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType' and code = 'IRCP').exists() and reference.reference.exists()).exists()"
Severity: #error

Invariant: cx-con-4
Description: "The provision period has a start and an end: the consent permits disclosure to the consultant for a bounded time (IHE PCF)."
Expression: "provision.period.start.exists() and provision.period.end.exists()"
Severity: #error

Invariant: cx-con-5
Description: "A consult Consent is active, or inactive once withdrawn; a withdrawal cancels the consult (IHE PCF)."
Expression: "status = 'active' or status = 'inactive'"
Severity: #error

Profile: ConsultConsent
Parent: Consent
Id: consult-consent
Title: "Consult Consent"
Description: "The patient's permission to disclose to the consultant institution for treatment (IHE PCF; R4 ppc-1, ppc-2)."
* ^status = #active
* obeys cx-con-1 and cx-con-2 and cx-con-3 and cx-con-4 and cx-con-5
* scope = $consent-scope#patient-privacy
* category 1..*
* patient 1..1
* patient only Reference(ConsultPatient)
* dateTime 1..1
* performer 1..1
* performer only Reference(ConsultPatient or RelatedPerson or ConsultPractitionerRole)
* organization 1..1
* organization only Reference(ConsultOrganization)
* source[x] 1..1
* policy 1..1
* policy.uri 1..1
* provision 1..1
* provision.type 1..1
* provision.type = #permit
* provision.period 1..1
* provision.actor 1..*
* provision.purpose 1..*
