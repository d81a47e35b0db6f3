-- Person resolution: every patient-facing view answers by the CURRENT EUID of each fact's source
-- record (its latest mpi.links.v1 event), falling back to the EUID stamped at write when the
-- record has no link event yet. So a MERGE re-keys every fact at once, without rewriting a row.

CREATE VIEW IF NOT EXISTS {db}.current_links AS
SELECT record_key, argMax(euid, version) AS euid, argMax(event_type, version) AS event_type,
       max(occurred_at) AS linked_at
FROM {db}.euid_map GROUP BY record_key;

CREATE VIEW IF NOT EXISTS {db}.patients_current AS
SELECT f.* EXCEPT (euid), f.euid AS stamped_euid, if(l.euid != '', l.euid, f.euid) AS euid
FROM {db}.patients AS f FINAL
LEFT JOIN {db}.current_links AS l ON l.record_key = f.source_patient_key
WHERE f.source_patient_key != '' OR f.euid != '';

CREATE VIEW IF NOT EXISTS {db}.encounters_current AS
SELECT f.* EXCEPT (euid), f.euid AS stamped_euid, if(l.euid != '', l.euid, f.euid) AS euid
FROM {db}.encounters AS f FINAL
LEFT JOIN {db}.current_links AS l ON l.record_key = f.source_patient_key
WHERE f.source_patient_key != '' OR f.euid != '';

CREATE VIEW IF NOT EXISTS {db}.observations_current AS
SELECT f.* EXCEPT (euid), f.euid AS stamped_euid, if(l.euid != '', l.euid, f.euid) AS euid
FROM {db}.observations AS f FINAL
LEFT JOIN {db}.current_links AS l ON l.record_key = f.source_patient_key
WHERE f.source_patient_key != '' OR f.euid != '';

CREATE VIEW IF NOT EXISTS {db}.conditions_current AS
SELECT f.* EXCEPT (euid), f.euid AS stamped_euid, if(l.euid != '', l.euid, f.euid) AS euid
FROM {db}.conditions AS f FINAL
LEFT JOIN {db}.current_links AS l ON l.record_key = f.source_patient_key
WHERE f.source_patient_key != '' OR f.euid != '';

CREATE VIEW IF NOT EXISTS {db}.medications_current AS
SELECT f.* EXCEPT (euid), f.euid AS stamped_euid, if(l.euid != '', l.euid, f.euid) AS euid
FROM {db}.medications AS f FINAL
LEFT JOIN {db}.current_links AS l ON l.record_key = f.source_patient_key
WHERE f.source_patient_key != '' OR f.euid != '';

CREATE VIEW IF NOT EXISTS {db}.claims_current AS
SELECT f.* EXCEPT (euid), f.euid AS stamped_euid, if(l.euid != '', l.euid, f.euid) AS euid
FROM {db}.claims AS f FINAL
LEFT JOIN {db}.current_links AS l ON l.record_key = f.source_patient_key
WHERE f.source_patient_key != '' OR f.euid != '';

CREATE VIEW IF NOT EXISTS {db}.appointments_current AS
SELECT f.* EXCEPT (euid), f.euid AS stamped_euid, if(l.euid != '', l.euid, f.euid) AS euid
FROM {db}.appointments AS f FINAL
LEFT JOIN {db}.current_links AS l ON l.record_key = f.source_patient_key
WHERE f.source_patient_key != '' OR f.euid != '';

CREATE VIEW IF NOT EXISTS {db}.immunizations_current AS
SELECT f.* EXCEPT (euid), f.euid AS stamped_euid, if(l.euid != '', l.euid, f.euid) AS euid
FROM {db}.immunizations AS f FINAL
LEFT JOIN {db}.current_links AS l ON l.record_key = f.source_patient_key
WHERE f.source_patient_key != '' OR f.euid != '';

CREATE VIEW IF NOT EXISTS {db}.coverages_current AS
SELECT f.* EXCEPT (euid), f.euid AS stamped_euid, if(l.euid != '', l.euid, f.euid) AS euid
FROM {db}.coverages AS f FINAL
LEFT JOIN {db}.current_links AS l ON l.record_key = f.source_patient_key
WHERE f.source_patient_key != '' OR f.euid != '';
