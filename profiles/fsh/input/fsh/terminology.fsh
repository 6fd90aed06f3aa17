// CodeSystems and ValueSets of the consult workflow.

CodeSystem: ConsultCategory
Id: consult-category
Title: "Consult category"
Description: "Categories of remote-consultation requests and of the questions and answers exchanged about them (CA:eReC; NHS BaRS)."
* ^status = #active
* ^caseSensitive = true
* ^content = #complete
* #remote-consultation "Remote consultation" "A request for a specialist at another institution to give an opinion on a patient (원격협진)."
* #consult-question "Consult question" "A question about a consult request, asked by either party."
* #consult-answer "Consult answer" "An answer to a consult question; always refers to the question (inResponseTo)."

ValueSet: ConsultRequestCategory
Id: consult-request-category
Title: "Consult request category"
Description: "The category of a consult ServiceRequest: a remote consultation."
* ^status = #active
* ConsultCategory#remote-consultation

ValueSet: ConsultCommunicationCategory
Id: consult-communication-category
Title: "Consult communication category"
Description: "Whether a consult Communication is a question or an answer (CA:eReC; Ontario eConsult)."
* ^status = #active
* ConsultCategory#consult-question
* ConsultCategory#consult-answer

CodeSystem: ConsultTaskCode
Id: consult-task-code
Title: "Consult task code"
Description: "What a consult Task asks its owner to do (R4 workflow option H)."
* ^status = #active
* ^caseSensitive = true
* ^content = #complete
* #consult "Fulfil remote consultation" "Triage the referenced consult request and, when accepted, answer it with a consult note."
* #follow-up "Fulfil follow-up consultation" "A follow-up consult after discharge or transfer: partOf the first consult's Task, focus the same ServiceRequest, due by Task.restriction.period.end; answered with a consult note like the first."

ValueSet: ConsultTaskCodes
Id: consult-task-code
Title: "Consult task codes"
Description: "Codes allowed in Task.code of a consult Task."
* ^status = #active
* include codes from system ConsultTaskCode

CodeSystem: ConsultBusinessStatus
Id: consult-business-status
Title: "Consult business status"
Description: "Fine-grained consult progress carried in Task.businessStatus. By design no code equals a Task.status code (UMZH; COW)."
* ^status = #active
* ^caseSensitive = true
* ^content = #complete
* #triage "Triage" "The consultant institution is triaging the request."
* #awaiting-information "Awaiting information" "The consultant asked the requester for more information (Task.status received or in-progress)."
* #information-provided "Information provided" "The requester answered the consultant's question."
* #under-review "Under review" "A specialist is reviewing the case."
* #report-drafting "Report in preparation" "The consult note is being written."
* #report-available "Report available" "The consult note has been issued."
* #abort-requested "Abort requested" "The requester asked for the consult to be stopped after work began."
* #overdue "Overdue" "A follow-up consult is past its due date (Task.restriction.period.end) and not finished; set by the server."

ValueSet: ConsultBusinessStatuses
Id: consult-business-status
Title: "Consult business statuses"
Description: "Codes allowed in Task.businessStatus of a consult Task."
* ^status = #active
* include codes from system ConsultBusinessStatus

CodeSystem: ConsultRecommendation
Id: consult-recommendation
Title: "Consult recommendation"
Description: "What the consultant recommends in the consult note (DocumentReference.category): where the patient is managed next and whether a follow-up consult is needed."
* ^status = #active
* ^caseSensitive = true
* ^content = #complete
* #manage-locally "Manage locally" "Keep managing the patient at the requesting hospital, following the consult note's advice."
* #transfer-routine "Transfer (routine)" "Transfer the patient to the consultant institution (or another with the service) as a planned admission or outpatient visit."
* #transfer-urgent "Transfer (urgent)" "Transfer the patient urgently, e.g. through the emergency department."
* #follow-up-consult "Follow-up consult" "Manage locally and request a follow-up consult (a Task with code follow-up) by a due date."

ValueSet: ConsultRecommendations
Id: consult-recommendation
Title: "Consult recommendations"
Description: "Codes allowed in the recommendation category of a consult note."
* ^status = #active
* include codes from system ConsultRecommendation

CodeSystem: ConsultEvent
Id: consult-event
Title: "Consult message event"
Description: "Events of FHIR messages exchanged about a consult (messaging.html)."
* ^status = #active
* ^caseSensitive = true
* ^content = #complete
* #consult-request "Consult request" "A requester sends a new consult request (focus: ServiceRequest)."
* #consult-status-update "Consult status update" "The consultant changes the consult Task's status (focus: Task)."
* #consult-communication "Consult communication" "A question or answer about a consult (focus: Communication)."
* #consult-report "Consult report" "The consultant completes the consult with a consult note (focus: completed Task)."
* #consult-cancel "Consult cancel" "The requester revokes the request (focus: revoked ServiceRequest) or the consultant cancels its Task (focus: cancelled Task)."

ValueSet: ConsultEvents
Id: consult-event
Title: "Consult message events"
Description: "Events allowed in MessageHeader.eventCoding of consult messages."
* ^status = #active
* include codes from system ConsultEvent

CodeSystem: ConsultConnectionStyle
Id: consult-connection-style
Title: "Consult connection style"
Description: "How an institution connects to the exchange: through the exchange's web portal, from its EMR over a VPN link, or from another exchange system by FHIR messages."
* ^status = #active
* ^caseSensitive = true
* ^content = #complete
* #portal "Portal" "Staff use web pages served by the exchange; the institution runs no FHIR-capable EMR."
* #vpn-emr "VPN-linked EMR" "The institution's EMR talks FHIR REST to the exchange over a private link with mutual TLS."
* #exchange-system "Exchange system" "Another information-exchange system sends FHIR message Bundles."

ValueSet: ConsultConnectionStyles
Id: consult-connection-style
Title: "Consult connection styles"
Description: "Connection styles of an institution's Endpoint."
* ^status = #active
* include codes from system ConsultConnectionStyle
