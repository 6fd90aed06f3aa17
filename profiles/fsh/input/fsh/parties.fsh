// Patients, institutions, practitioners and endpoints taking part in a consult.
// Derived from KR Core 2.0.0 where it has a profile; never identified by a resident registration
// number (PIPA Art. 24-2).

Invariant: cx-pat-1
Description: "The Patient carries the institution's medical record number: an identifier of type v2-0203 MR with system, value and assigner (KR Core)."
Expression: "identifier.where(type.coding.where(system = 'http://terminology.hl7.org/CodeSystem/v2-0203' and code = 'MR').exists() and system.exists() and value.exists() and assigner.exists()).exists()"
Severity: #error

Invariant: cx-rrn-1
Description: "No identifier uses a resident registration number (주민등록번호) system (PIPA Art. 24-2)."
Expression: "identifier.system.all(lower().matches('rrn|resident') = false)"
Severity: #error

Invariant: cx-rrn-2
Description: "No identifier value has the 13-digit resident registration number pattern YYMMDD-NNNNNNN (PIPA Art. 24-2)."
Expression: "identifier.value.all(matches('^[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])-?[0-9]{7}$') = false)"
Severity: #error

Profile: ConsultPatient
Parent: $krcore-patient
Id: consult-patient
Title: "Consult Patient"
Description: "The patient of a remote consultation: KR Core Patient identified by the requesting institution's medical record number, never by a resident registration number (KR Core; PIPA Art. 24-2)."
* ^status = #active
* obeys cx-pat-1 and cx-rrn-1 and cx-rrn-2
* identifier 1..*
* identifier.system 1..1
* identifier.value 1..1

Invariant: cx-org-1
Description: "The HIRA institution identifier (요양기관기호) is in its normalised form: exactly 8 digits, no separators (KR Core; HIRA)."
Expression: "identifier.where(system = 'http://www.hl7korea.or.kr/Identifier/hira-krnpi').value.all(matches('^[0-9]{8}$'))"
Severity: #error

Profile: ConsultOrganization
Parent: $krcore-healthcare-organization
Id: consult-organization
Title: "Consult Organization"
Description: "A healthcare institution taking part in consults (requester or consultant): KR Core healthcare organization with its HIRA institution identifier in normalised form."
* ^status = #active
* obeys cx-org-1
* active 1..1
* endpoint only Reference(ConsultEndpoint)

Profile: ConsultPractitioner
Parent: $krcore-medical-doctor
Id: consult-practitioner
Title: "Consult Practitioner"
Description: "A doctor taking part in consults: KR Core medical doctor carrying the MOHW licence identifier; never identified by a resident registration number (PIPA Art. 24-2)."
* ^status = #active
* obeys cx-rrn-1 and cx-rrn-2

Profile: ConsultPractitionerRole
Parent: $krcore-practitioner-role
Id: consult-practitioner-role
Title: "Consult PractitionerRole"
Description: "A practitioner acting for an institution in a consult: the requester of a ServiceRequest, or the specialist owning a consult Task."
* ^status = #active
* active 1..1
* practitioner 1..1
* practitioner only Reference(ConsultPractitioner)
* organization 1..1
* organization only Reference(ConsultOrganization)
* code 1..*

Extension: ConsultConnectionStyleExtension
Id: consult-connection-style
Title: "Consult connection style"
Description: "How the institution owning this Endpoint connects to the exchange: portal, VPN-linked EMR or exchange system."
Context: Endpoint
* ^status = #active
* value[x] only code
* value[x] from ConsultConnectionStyles (required)

Invariant: cx-ep-1
Description: "An Endpoint of connection style exchange-system receives FHIR messages: connectionType hl7-fhir-msg (R4 messaging.html)."
Expression: "extension('http://fhir-exchange.org/fhir/StructureDefinition/consult-connection-style').where(value = 'exchange-system').exists() implies connectionType.code = 'hl7-fhir-msg'"
Severity: #error

Invariant: cx-ep-2
Description: "An Endpoint of connection style vpn-emr speaks FHIR REST over TLS: connectionType hl7-fhir-rest and an https address (R4 http.html; security.html)."
Expression: "extension('http://fhir-exchange.org/fhir/StructureDefinition/consult-connection-style').where(value = 'vpn-emr').exists() implies (connectionType.code = 'hl7-fhir-rest' and address.startsWith('https://'))"
Severity: #error

Profile: ConsultEndpoint
Parent: Endpoint
Id: consult-endpoint
Title: "Consult Endpoint"
Description: "How an institution connects to the exchange: its connection style (portal | vpn-emr | exchange-system), the technical connection type and the address."
* ^status = #active
* obeys cx-ep-1 and cx-ep-2
* extension contains ConsultConnectionStyleExtension named connectionStyle 1..1
* managingOrganization 1..1
* managingOrganization only Reference(ConsultOrganization)

Invariant: cx-net-1
Description: "The hub and the partner of a network affiliation are two different organizations (R4 OrganizationAffiliation)."
Expression: "organization.reference != participatingOrganization.reference"
Severity: #error

Profile: ConsultNetwork
Parent: OrganizationAffiliation
Id: consult-network
Title: "Consult network"
Description: "A partner institution's membership of a hub's consult network: the partner (participatingOrganization) requests consults from the hub (organization), in the departments the hub offers it (specialty; none: every department), while the affiliation is active and within its period (R4 OrganizationAffiliation)."
* ^status = #active
* obeys cx-net-1
* active 1..1
* period ^short = "When the partner may request consults from the hub"
* organization 1..1
* organization only Reference(ConsultOrganization)
* organization ^short = "The hub: the institution consulted"
* participatingOrganization 1..1
* participatingOrganization only Reference(ConsultOrganization)
* participatingOrganization ^short = "The partner: the institution that requests consults"
* specialty from $krcore-departments (extensible)
* specialty ^short = "Departments the hub offers the partner (HIRA medical department); none: every department"
