// Consult exchanges as Bundles: FHIR messages per consult event and REST transactions, both under
// the reference rule of consult Bundles and the cross-resource consult rules that need the other
// resources of the Bundle (resolve() within the Bundle: fhirpath.html#functions).

Profile: ConsultMessageHeader
Parent: MessageHeader
Id: consult-message-header
Title: "Consult MessageHeader"
Description: "The header of a consult message: a consult event, the sending institution and the consult resource the message is about (messaging.html)."
* ^status = #active
* event[x] only Coding
* event[x] from ConsultEvents (required)
* destination 1..*
* destination.endpoint 1..1
* destination.receiver 1..1
* destination.receiver only Reference(ConsultOrganization)
* sender 1..1
* sender only Reference(ConsultOrganization)
* source.endpoint 1..1
* focus 1..*

Invariant: cx-bdl-1
Description: "Every reference is local to the Bundle (a fullUrl, or Type/id of an entry, or #contained), a resource the receiving server holds (a relative Type/id) or an absolute http(s) URL, whose institution the server checks (R4 bundle.html; UMZH)."
Expression: "descendants().ofType(Reference).reference.where(startsWith('#').not()).all(($this in %resource.entry.fullUrl) or matches('^https?://') or matches('^[A-Z][A-Za-z]+/[A-Za-z0-9.-]{1,64}(/_history/[A-Za-z0-9.-]{1,64})?$') or (%resource.entry.resource.select(resourceType + '/' + id) contains $this))"
Severity: #error

Invariant: cx-bdl-2
Description: "A Consent that a ServiceRequest of the Bundle references is about the ServiceRequest's subject (BSeR)."
Expression: "entry.resource.ofType(ServiceRequest).all((supportingInfo.resolve().ofType(Consent).patient.reference | subject.reference).count() = 1)"
Severity: #error

Invariant: cx-bdl-3
Description: "A Task's for and requester are those of the ServiceRequest its focus names (BSeR; COW)."
Expression: "entry.resource.ofType(Task).all((focus.resolve().ofType(ServiceRequest).subject.reference | for.reference).count() = 1 and (focus.resolve().ofType(ServiceRequest).requester.reference | requester.reference).count() = 1)"
Severity: #error

Invariant: cx-bdl-4
Description: "A Communication's subject is the subject of the ServiceRequest it is based on (CA:eReC)."
Expression: "entry.resource.ofType(Communication).all((basedOn.resolve().ofType(ServiceRequest).subject.reference | subject.reference).count() = 1)"
Severity: #error

Invariant: cx-bdl-5
Description: "The output of a completed Task, when in the Bundle, is a consult note: a DocumentReference of type LOINC 11488-4 (R4 example; COW)."
Expression: "entry.resource.ofType(Task).where(status = 'completed').output.value.ofType(Reference).resolve().all(($this is DocumentReference) and type.coding.where(system = 'http://loinc.org' and code = '11488-4').exists())"
Severity: #error

RuleSet: ConsultBundleRules
* obeys cx-bdl-1 and cx-bdl-2 and cx-bdl-3 and cx-bdl-4 and cx-bdl-5
* entry 1..*
* entry.fullUrl 1..1
* entry.resource 1..1

Invariant: cx-msg-1
Description: "The MessageHeader's focus resolves inside the Bundle, to an entry's fullUrl (R4 bdl-12; CA:eReC; BSeR)."
Expression: "entry.first().resource.is(MessageHeader) implies (entry.first().resource.focus.exists() and entry.first().resource.focus.reference.all($this in %resource.entry.fullUrl))"
Severity: #error

Profile: ConsultMessageBundle
Parent: Bundle
Id: consult-message-bundle
Title: "Consult message Bundle"
Description: "A FHIR message about a consult (messaging.html): the MessageHeader first, its focus inside the Bundle, identifier (the message id: a repeated id gets the first response) and timestamp required. Each consult event has its own profile."
* ^status = #active
* insert ConsultBundleRules
* obeys cx-msg-1
* identifier 1..1
* identifier.system 1..1
* identifier.value 1..1
* type = #message
* timestamp 1..1

Profile: ConsultTransactionBundle
Parent: Bundle
Id: consult-transaction-bundle
Title: "Consult transaction Bundle"
Description: "A consult exchange over REST (portal and VPN-linked EMRs): a transaction Bundle under the same reference and cross-resource rules as a consult message; every entry has a request (core bdl-3)."
* ^status = #active
* insert ConsultBundleRules
* type = #transaction

Invariant: cx-mreq-1
Description: "A consult-request message has event consult-request and focus the one ServiceRequest it carries (CA:eReC)."
Expression: "entry.first().resource.event.ofType(Coding).where(system = 'http://fhir-exchange.org/fhir/CodeSystem/consult-event' and code = 'consult-request').exists() and entry.first().resource.focus.resolve().ofType(ServiceRequest).count() = 1 and entry.resource.ofType(ServiceRequest).count() = 1"
Severity: #error

Invariant: cx-mreq-2
Description: "The requested consult's ServiceRequest references an active Consent carried in the message (BSeR; IHE PCF)."
Expression: "entry.resource.ofType(ServiceRequest).supportingInfo.resolve().ofType(Consent).where(status = 'active').exists()"
Severity: #error

Invariant: cx-mreq-3
Description: "The Consent's recipient, its actor with role IRCP, is the ServiceRequest's performer or the performer's organization (IHE PCF)."
Expression: "entry.resource.ofType(ServiceRequest).all((supportingInfo.resolve().ofType(Consent).provision.actor.where(role.coding.where(code = 'IRCP').exists()).reference.reference | (performer.reference | performer.resolve().organization.reference)).count() < supportingInfo.resolve().ofType(Consent).provision.actor.where(role.coding.where(code = 'IRCP').exists()).reference.reference.distinct().count() + (performer.reference | performer.resolve().organization.reference).count())"
Severity: #error

Invariant: cx-mreq-4
Description: "The message carries the consult Task, status requested, whose focus is the ServiceRequest (R4 workflow option H; BSeR)."
Expression: "entry.resource.ofType(Task).where(status = 'requested' and focus.resolve().ofType(ServiceRequest).exists()).count() = 1"
Severity: #error

Profile: ConsultRequestMessage
Parent: ConsultMessageBundle
Id: consult-request-message
Title: "Consult request message"
Description: "Event consult-request: a requester sends a new consult (ServiceRequest, its Consent, the requested Task, the patient and the parties)."
* ^status = #active
* obeys cx-mreq-1 and cx-mreq-2 and cx-mreq-3 and cx-mreq-4

Invariant: cx-mstu-1
Description: "A consult-status-update message has event consult-status-update and focus the consult Task carried in the message (CA:eReC; COW)."
Expression: "entry.first().resource.event.ofType(Coding).where(system = 'http://fhir-exchange.org/fhir/CodeSystem/consult-event' and code = 'consult-status-update').exists() and entry.first().resource.focus.resolve().ofType(Task).exists()"
Severity: #error

Profile: ConsultStatusUpdateMessage
Parent: ConsultMessageBundle
Id: consult-status-update-message
Title: "Consult status update message"
Description: "Event consult-status-update: the consultant reports a change of the consult Task (received, accepted, rejected, in-progress, businessStatus)."
* ^status = #active
* obeys cx-mstu-1

Invariant: cx-mcom-1
Description: "A consult-communication message has event consult-communication and focus the Communication carried in the message (CA:eReC; Ontario eConsult)."
Expression: "entry.first().resource.event.ofType(Coding).where(system = 'http://fhir-exchange.org/fhir/CodeSystem/consult-event' and code = 'consult-communication').exists() and entry.first().resource.focus.resolve().ofType(Communication).exists()"
Severity: #error

Profile: ConsultCommunicationMessage
Parent: ConsultMessageBundle
Id: consult-communication-message
Title: "Consult communication message"
Description: "Event consult-communication: a question or an answer about a consult."
* ^status = #active
* obeys cx-mcom-1

Invariant: cx-mrep-1
Description: "A consult-report message has event consult-report and focus a completed Task whose output, the consult note, is carried in the message (CA:eReC; COW)."
Expression: "entry.first().resource.event.ofType(Coding).where(system = 'http://fhir-exchange.org/fhir/CodeSystem/consult-event' and code = 'consult-report').exists() and entry.first().resource.focus.resolve().ofType(Task).where(status = 'completed').output.value.ofType(Reference).resolve().ofType(DocumentReference).exists()"
Severity: #error

Profile: ConsultReportMessage
Parent: ConsultMessageBundle
Id: consult-report-message
Title: "Consult report message"
Description: "Event consult-report: the consultant completes the consult Task with its consult note."
* ^status = #active
* obeys cx-mrep-1

Invariant: cx-mcan-1
Description: "A consult-cancel message has event consult-cancel and focus a revoked ServiceRequest or a cancelled Task carried in the message (COW)."
Expression: "entry.first().resource.event.ofType(Coding).where(system = 'http://fhir-exchange.org/fhir/CodeSystem/consult-event' and code = 'consult-cancel').exists() and entry.first().resource.focus.resolve().where((($this is ServiceRequest) and status = 'revoked') or (($this is Task) and status = 'cancelled')).exists()"
Severity: #error

Profile: ConsultCancelMessage
Parent: ConsultMessageBundle
Id: consult-cancel-message
Title: "Consult cancel message"
Description: "Event consult-cancel: the requester revokes the ServiceRequest before work began, or the consultant cancels the Task."
* ^status = #active
* obeys cx-mcan-1
