// The consult request, its coordination Task, the questions and answers about it and the consult note.

Invariant: cx-sr-1
Description: "A consult ServiceRequest's status is draft, active, revoked, completed or entered-in-error (BSeR; COW)."
Expression: "status = 'draft' or status = 'active' or status = 'revoked' or status = 'completed' or status = 'entered-in-error'"
Severity: #error

Invariant: cx-sr-2
Description: "The ServiceRequest has a placer identifier assigned by the requester: an identifier of type v2-0203 PLAC with system and value (BSeR)."
Expression: "identifier.where(type.coding.where(system = 'http://terminology.hl7.org/CodeSystem/v2-0203' and code = 'PLAC').exists() and system.exists() and value.exists()).exists()"
Severity: #error

Invariant: cx-sr-3
Description: "A KCD-8 coding in reasonCode has a well-formed KCD-8 code: a letter, two digits, then optionally . and up to 3 characters (KR Core; BSeR)."
Expression: "reasonCode.coding.where(system = 'http://www.hl7korea.or.kr/CodeSystem/kostat-kcd-8').code.all(matches('^[A-Z][0-9]{2}([.][0-9A-Z]{1,3})?$'))"
Severity: #error

Invariant: cx-sr-4
Description: "ServiceRequest.supportingInfo references a Consent: a typed reference (type = 'Consent') or a Consent/[id] URL (BSeR)."
Expression: "supportingInfo.where(type = 'Consent' or reference.matches('(^|/)Consent/[A-Za-z0-9.-]{1,64}(/_history/[A-Za-z0-9.-]{1,64})?$')).exists()"
Severity: #error

Profile: ConsultServiceRequest
Parent: ServiceRequest
Id: consult-service-request
Title: "Consult ServiceRequest"
Description: "A remote-consultation request authored by the requesting institution (BSeR; CA:eReC)."
* ^status = #active
* obeys cx-sr-1 and cx-sr-2 and cx-sr-3 and cx-sr-4
* identifier 1..*
* intent = #order
* category 1..1
* category = ConsultCategory#remote-consultation
* code 1..1
* code from $krcore-departments (extensible)
* subject 1..1
* subject only Reference(ConsultPatient)
* authoredOn 1..1
* requester 1..1
* requester only Reference(ConsultPractitionerRole)
* performer 1..1
* performer only Reference(ConsultOrganization or HealthcareService or ConsultPractitionerRole)
* reasonCode 1..*
* reasonCode from $krcore-kcd8 (preferred)
* reasonCode.text 1..1
* supportingInfo 1..*

Invariant: cx-task-1
Description: "Task.basedOn, when present, is the single ServiceRequest that Task.focus names (BSeR; COW)."
Expression: "basedOn.exists() implies (basedOn.count() = 1 and basedOn.reference = focus.reference)"
Severity: #error

Invariant: cx-task-2
Description: "Task.statusReason is required when the Task is rejected, cancelled, failed or on-hold (R4 referral example; BSeR)."
Expression: "(status = 'rejected' or status = 'cancelled' or status = 'failed' or status = 'on-hold') implies statusReason.exists()"
Severity: #error

Invariant: cx-task-3
Description: "A completed Task has an output of type LOINC 11488-4 referencing the consult note DocumentReference (R4 example; COW; CA:eReC)."
Expression: "status = 'completed' implies output.where(type.coding.where(system = 'http://loinc.org' and code = '11488-4').exists() and value.ofType(Reference).reference.exists()).exists()"
Severity: #error

Invariant: cx-task-4
Description: "Task.businessStatus is never a copy of a Task.status code (UMZH; COW)."
Expression: "businessStatus.coding.code.intersect('draft' | 'requested' | 'received' | 'accepted' | 'rejected' | 'ready' | 'cancelled' | 'in-progress' | 'on-hold' | 'failed' | 'completed' | 'entered-in-error').empty()"
Severity: #error

Invariant: cx-task-5
Description: "Task.businessStatus is awaiting-information only while Task.status is received or in-progress (UMZH; COW)."
Expression: "businessStatus.coding.where(system = 'http://fhir-exchange.org/fhir/CodeSystem/consult-business-status' and code = 'awaiting-information').exists() implies (status = 'received' or status = 'in-progress')"
Severity: #error

Invariant: cx-task-6
Description: "A follow-up Task (code follow-up) is partOf exactly one Task: the first consult's Task (R4 workflow; COW)."
Expression: "code.coding.where(system = 'http://fhir-exchange.org/fhir/CodeSystem/consult-task-code' and code = 'follow-up').exists() implies partOf.count() = 1"
Severity: #error

Invariant: cx-task-7
Description: "A follow-up Task has a due date: Task.restriction.period.end (R4 Task.restriction; COW)."
Expression: "code.coding.where(system = 'http://fhir-exchange.org/fhir/CodeSystem/consult-task-code' and code = 'follow-up').exists() implies restriction.period.end.exists()"
Severity: #error

Invariant: cx-task-8
Description: "Task.businessStatus is overdue only on a follow-up Task, whose due date has a meaning (R4 Task.restriction; COW)."
Expression: "businessStatus.coding.where(system = 'http://fhir-exchange.org/fhir/CodeSystem/consult-business-status' and code = 'overdue').exists() implies code.coding.where(system = 'http://fhir-exchange.org/fhir/CodeSystem/consult-task-code' and code = 'follow-up').exists()"
Severity: #error

Profile: ConsultTask
Parent: Task
Id: consult-task
Title: "Consult Task"
Description: "Coordination of a consult request, owned by the consultant (R4 workflow option H; BSeR; COW): the consult itself (code consult) or a follow-up consult after discharge or transfer (code follow-up: partOf the first consult's Task, focus the same ServiceRequest, due by restriction.period.end). That lastModified is not before authoredOn is the core invariant inv-1."
* ^status = #active
* obeys cx-task-1 and cx-task-2 and cx-task-3 and cx-task-4 and cx-task-5 and cx-task-6 and cx-task-7 and cx-task-8
* intent = #order
* code 1..1
* code from ConsultTaskCodes (required)
* focus 1..1
* focus only Reference(ConsultServiceRequest)
* basedOn 0..1
* basedOn only Reference(ConsultServiceRequest)
* for 1..1
* for only Reference(ConsultPatient)
* authoredOn 1..1
* requester 1..1
* requester only Reference(ConsultPractitionerRole)
* owner 1..1
* owner only Reference(ConsultOrganization or ConsultPractitionerRole)
* businessStatus from ConsultBusinessStatuses (required)
* partOf only Reference(ConsultTask)

Invariant: cx-comm-1
Description: "A consult Communication's status is completed or entered-in-error (CA:eReC; Ontario eConsult)."
Expression: "status = 'completed' or status = 'entered-in-error'"
Severity: #error

Invariant: cx-comm-2
Description: "An answer refers to the question it answers in Communication.inResponseTo (CA:eReC; Ontario eConsult)."
Expression: "category.coding.where(system = 'http://fhir-exchange.org/fhir/CodeSystem/consult-category' and code = 'consult-answer').exists() implies inResponseTo.exists()"
Severity: #error

Profile: ConsultCommunication
Parent: Communication
Id: consult-communication
Title: "Consult Communication"
Description: "A question or answer about a consult between requester and consultant (CA:eReC; Ontario eConsult)."
* ^status = #active
* obeys cx-comm-1 and cx-comm-2
* basedOn 1..*
* basedOn only Reference(ConsultServiceRequest)
* category 1..1
* category from ConsultCommunicationCategory (required)
* subject 1..1
* subject only Reference(ConsultPatient)
* sent 1..1
* sender 1..1
* sender only Reference(ConsultPractitionerRole or ConsultOrganization)
* recipient 1..*
* recipient only Reference(ConsultPractitionerRole or ConsultOrganization)
* payload 1..*
* inResponseTo only Reference(ConsultCommunication)

Invariant: cx-doc-1
Description: "Every attachment of a consult note carries its content inline (data) or by URL (a Binary) (R4 example; COW)."
Expression: "content.attachment.all(data.exists() or url.exists())"
Severity: #error

Profile: ConsultNote
Parent: DocumentReference
Id: consult-note
Title: "Consult Note"
Description: "The consultant's answer to a consult request: a DocumentReference of type LOINC 11488-4 (Consult note) linked to the ServiceRequest, with the consultant's coded recommendation as a category (R4 example; COW; CA:eReC)."
* ^status = #active
* obeys cx-doc-1
* status = #current
* type 1..1
* type = $loinc#11488-4
* category ^slicing.discriminator.type = #pattern
* category ^slicing.discriminator.path = "$this"
* category ^slicing.rules = #open
* category ^slicing.description = "The recommendation is the category whose coding is from the consult-recommendation CodeSystem."
* category contains recommendation 0..1
* category[recommendation] ^short = "What the consultant recommends"
* category[recommendation] ^definition = "The consultant's recommendation: manage locally, transfer (routine or urgent), or a follow-up consult. The server reads the first category coding from the consult-recommendation CodeSystem."
* category[recommendation] from ConsultRecommendations (required)
* category[recommendation] ^patternCodeableConcept.coding.system = "http://fhir-exchange.org/fhir/CodeSystem/consult-recommendation"
* subject 1..1
* subject only Reference(ConsultPatient)
* date 1..1
* author 1..*
* author only Reference(ConsultPractitionerRole or ConsultOrganization)
* custodian 1..1
* custodian only Reference(ConsultOrganization)
* content.attachment.contentType 1..1
* context 1..1
* context.related 1..*
