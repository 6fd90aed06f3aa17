// SearchParameters the consult workflow needs beyond the R4 core ones.

Instance: ServiceRequest-supporting-info
InstanceOf: SearchParameter
Usage: #definition
Title: "ServiceRequest supporting-info"
* url = "http://fhir-exchange.org/fhir/SearchParameter/ServiceRequest-supporting-info"
* name = "supporting-info"
* status = #active
* description = "Consult requests that reference a resource as supporting information, e.g. every consult covered by a Consent (withdrawing the Consent cancels them)."
* code = #supporting-info
* base = #ServiceRequest
* type = #reference
* expression = "ServiceRequest.supportingInfo"
* xpathUsage = #normal
* target[0] = #Consent
* target[+] = #Condition
* target[+] = #Observation
* target[+] = #DiagnosticReport
* target[+] = #DocumentReference
* target[+] = #ImagingStudy

Instance: Task-output-reference
InstanceOf: SearchParameter
Usage: #definition
Title: "Task output-reference"
* url = "http://fhir-exchange.org/fhir/SearchParameter/Task-output-reference"
* name = "output-reference"
* status = #active
* description = "Consult Tasks whose output references a resource, e.g. the Task completed with a given consult note."
* code = #output-reference
* base = #Task
* type = #reference
* expression = "Task.output.value.ofType(Reference)"
* xpathUsage = #normal
* target = #DocumentReference

Instance: Communication-in-response-to
InstanceOf: SearchParameter
Usage: #definition
Title: "Communication in-response-to"
* url = "http://fhir-exchange.org/fhir/SearchParameter/Communication-in-response-to"
* name = "in-response-to"
* status = #active
* description = "Answers to a consult question."
* code = #in-response-to
* base = #Communication
* type = #reference
* expression = "Communication.inResponseTo"
* xpathUsage = #normal
* target = #Communication

Instance: Endpoint-connection-style
InstanceOf: SearchParameter
Usage: #definition
Title: "Endpoint connection-style"
* url = "http://fhir-exchange.org/fhir/SearchParameter/Endpoint-connection-style"
* name = "connection-style"
* status = #active
* description = "Endpoints by the institution's connection style: portal | vpn-emr | exchange-system."
* code = #connection-style
* base = #Endpoint
* type = #token
* expression = "Endpoint.extension('http://fhir-exchange.org/fhir/StructureDefinition/consult-connection-style').value"
* xpathUsage = #normal

Instance: Consent-recipient
InstanceOf: SearchParameter
Usage: #definition
Title: "Consent recipient"
* url = "http://fhir-exchange.org/fhir/SearchParameter/Consent-recipient"
* name = "recipient"
* status = #active
* description = "Consents whose permit provision names a recipient (actor with role IRCP): the consent check for an institution reading a consult (IHE PCF)."
* code = #recipient
* base = #Consent
* type = #reference
* expression = "Consent.provision.actor.where(role.coding.where(system = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType' and code = 'IRCP').exists()).reference"
* xpathUsage = #normal
* target[0] = #Organization
* target[+] = #PractitionerRole
* target[+] = #HealthcareService
