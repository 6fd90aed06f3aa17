// Aliases shared by every FSH file of the consult IG.
Alias: $v2-0203 = http://terminology.hl7.org/CodeSystem/v2-0203
Alias: $loinc = http://loinc.org
Alias: $act-reason = http://terminology.hl7.org/CodeSystem/v3-ActReason
Alias: $participation = http://terminology.hl7.org/CodeSystem/v3-ParticipationType
Alias: $consent-scope = http://terminology.hl7.org/CodeSystem/consentscope
Alias: $kcd8 = http://www.hl7korea.or.kr/CodeSystem/kostat-kcd-8
Alias: $hira-krnpi = http://www.hl7korea.or.kr/Identifier/hira-krnpi
Alias: $mohw-license = http://www.hl7korea.or.kr/Identifier/mohw-md-license-id
Alias: $krcore-patient = http://www.hl7korea.or.kr/fhir/krcore/StructureDefinition/krcore-patient
Alias: $krcore-healthcare-organization = http://www.hl7korea.or.kr/fhir/krcore/StructureDefinition/krcore-healthcare-organization
Alias: $krcore-medical-doctor = http://www.hl7korea.or.kr/fhir/krcore/StructureDefinition/krcore-medical-doctor
Alias: $krcore-practitioner-role = http://www.hl7korea.or.kr/fhir/krcore/StructureDefinition/krcore-practitioner-role
Alias: $krcore-kcd8 = http://www.hl7korea.or.kr/fhir/krcore/ValueSet/krcore-kcd8-codes
Alias: $krcore-departments = http://www.hl7korea.or.kr/fhir/krcore/ValueSet/krcore-medicaldepartment-codes
