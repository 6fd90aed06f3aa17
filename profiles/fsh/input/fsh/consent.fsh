// The patient's consent to disclose to the consultant institution for treatment (rule 9).

Invariant: cx-con-1
Description: "Rule 9 (IHE PCF): Consent.category is LOINC 59284-0 (Patient Consent) or 64292-6 (Release of information consent)."
Expression: "category.coding.where(system = 'http://loinc.org' and (code = '59284-0' or code = '64292-6')).exists()"
Severity: #error

Invariant: cx-con-2
Description: "Rule 9 (IHE PCF): the permit provision's purpose is TREAT (v3-ActReason)."
Expression: "provision.purpose.where(system = 'http://terminology.hl7.org/CodeSystem/v3-ActReason' and code = 'TREAT').exists()"
Severity: #error

Invariant: cx-con-3
Description: "Rule 9 (IHE PCF): the provision names the consultant as recipient: an actor with role IRCP (v3-ParticipationType) and a reference."
Expression: "provision.actor.where(role.coding.where(system = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType' and code = 'IRCP').exists() and reference.reference.exists()).exists()"
Severity: #error

Invariant: cx-con-4
Description: "Rule 9 (IHE PCF; DESIGN.md consent check): the provision period has a start and an end."
Expression: "provision.period.start.exists() and provision.period.end.exists()"
Severity: #error

Invariant: cx-con-5
Description: "Rule 9 (IHE PCF): a consult Consent is active, or inactive once withdrawn (a withdrawal cancels the consult)."
Expression: "status = 'active' or status = 'inactive'"
Severity: #error

Profile: ConsultConsent
Parent: Consent
Id: consult-consent
Title: "Consult Consent"
Description: "The patient's permission to disclose to the consultant institution for treatment (rule 9; IHE PCF; R4 ppc-1, ppc-2)."
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
