-- Patient 360: one row per current EUID, assembled from one small view per fact family. Every
-- fact carries the source system(s) it came from. "Active"/"open" are decided by status (and, for
-- medications, by the latest fill's days of supply shown as covered_until), never by now(), so a
-- replayed or simulated day reads the same on any date.

-- The people Gold knows: every resolved EUID with the source records (source|mrn) behind it.
CREATE VIEW IF NOT EXISTS {db}.person_records AS
SELECT euid, arraySort(groupUniqArray(record_key)) AS identifiers,
       arraySort(groupUniqArray(splitByChar('|', record_key)[1])) AS sources
FROM (
    SELECT if(l.euid != '', l.euid, s.euid) AS euid, s.source_patient_key AS record_key
    FROM (SELECT DISTINCT source_patient_key, euid FROM {db}.silver_resources FINAL
          WHERE source_patient_key != '') AS s
    LEFT JOIN {db}.current_links AS l ON l.record_key = s.source_patient_key
)
WHERE euid != ''
GROUP BY euid;

-- Demographics: per field the latest non-empty value across the person's records, an EHR record
-- winning over any other source; demographics_sources names the record each field came from.
CREATE VIEW IF NOT EXISTS {db}.p360_demographics AS
SELECT r.euid AS euid,
       argMaxIf(r.family, (r.source = 'ehr', r.processed_at), r.family != '') AS family,
       argMaxIf(r.given, (r.source = 'ehr', r.processed_at), r.given != '') AS given,
       argMaxIf(r.birth_date, (r.source = 'ehr', r.processed_at), r.birth_date IS NOT NULL) AS birth_date,
       argMaxIf(r.gender, (r.source = 'ehr', r.processed_at), r.gender != '') AS gender,
       argMaxIf(r.phone, (r.source = 'ehr', r.processed_at), r.phone != '') AS phone,
       argMaxIf(r.email, (r.source = 'ehr', r.processed_at), r.email != '') AS email,
       argMaxIf(r.address_line, (r.source = 'ehr', r.processed_at), r.address_line != '') AS address_line,
       argMaxIf(r.city, (r.source = 'ehr', r.processed_at), r.city != '') AS city,
       argMaxIf(r.state, (r.source = 'ehr', r.processed_at), r.state != '') AS state,
       argMaxIf(r.postal_code, (r.source = 'ehr', r.processed_at), r.postal_code != '') AS postal_code,
       argMaxIf(r.race, (r.source = 'ehr', r.processed_at), r.race != '') AS race,
       argMaxIf(r.ethnicity, (r.source = 'ehr', r.processed_at), r.ethnicity != '') AS ethnicity,
       argMaxIf(r.language, (r.source = 'ehr', r.processed_at), r.language != '') AS language,
       max(r.deceased) AS deceased,
       map('name', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at), r.family != ''),
           'birth_date', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at), r.birth_date IS NOT NULL),
           'gender', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at), r.gender != ''),
           'phone', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at), r.phone != ''),
           'email', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at), r.email != ''),
           'address', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at), r.address_line != '' OR r.postal_code != ''),
           'race', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at), r.race != ''),
           'language', argMaxIf(r.source_patient_key, (r.source = 'ehr', r.processed_at), r.language != '')) AS demographics_sources
FROM {db}.patients_current AS r WHERE r.euid != '' GROUP BY r.euid;

-- Active conditions: per code, the latest status is neither inactive/resolved/remission nor
-- refuted/entered-in-error (a diagnosis sent without a clinical status counts as active).
CREATE VIEW IF NOT EXISTS {db}.p360_conditions AS
SELECT euid,
       arraySort(x -> x.code, groupArray(CAST((code, display, clinical_status, onset, sources),
           'Tuple(code String, display String, clinical_status String, onset Nullable(DateTime64(6, \'UTC\')), source String)'))) AS active_conditions
FROM (
    SELECT euid, code, argMax(display, at) AS display, argMax(clinical_status, at) AS clinical_status,
           argMax(verification_status, at) AS verification_status, min(coalesce(onset, recorded, event_time)) AS onset,
           arrayStringConcat(arraySort(groupUniqArray(source)), ',') AS sources
    FROM (SELECT *, coalesce(recorded, onset, event_time, processed_at) AS at FROM {db}.conditions_current
          WHERE euid != '' AND code != '')
    GROUP BY euid, code
    HAVING clinical_status NOT IN ('inactive', 'resolved', 'remission')
       AND verification_status NOT IN ('refuted', 'entered-in-error')
)
GROUP BY euid;

-- Key labs: the latest result and the one before it (an earlier time), per lab.
CREATE VIEW IF NOT EXISTS {db}.p360_lab_series AS
SELECT euid, lab, series[1] AS latest, arrayFilter(x -> x.2 < series[1].2, series)[1] AS previous
FROM (
    SELECT euid, lab,
           arrayReverseSort(x -> x.2, groupArray((value_num, toNullable(at), unit, source, code))) AS series
    FROM (
        SELECT euid, value_num, unit, source, code, coalesce(effective, event_time, processed_at) AS at,
               multiIf(code = '4548-4', 'hba1c', code IN ('33914-3', '62238-1', '98979-8'), 'egfr',
                       code IN ('13457-7', '18262-6', '2089-1'), 'ldl', code = '39156-5', 'bmi', '') AS lab
        FROM {db}.observations_current
        WHERE euid != '' AND code IN ('4548-4', '33914-3', '62238-1', '98979-8', '13457-7', '18262-6', '2089-1', '39156-5')
          AND value_num IS NOT NULL AND status NOT IN ('entered-in-error', 'cancelled')
    )
    GROUP BY euid, lab
);

CREATE VIEW IF NOT EXISTS {db}.p360_labs AS
SELECT euid,
       CAST((anyIf(latest.1, lab = 'hba1c'), anyIf(latest.3, lab = 'hba1c'), anyIf(latest.2, lab = 'hba1c'),
             anyIf(latest.4, lab = 'hba1c'), anyIf(latest.5, lab = 'hba1c'), anyIf(previous.1, lab = 'hba1c'),
             anyIf(previous.2, lab = 'hba1c')),
            'Tuple(value Nullable(Float64), unit String, at Nullable(DateTime64(6, \'UTC\')), source String, code String, prev_value Nullable(Float64), prev_at Nullable(DateTime64(6, \'UTC\')))') AS hba1c,
       CAST((anyIf(latest.1, lab = 'egfr'), anyIf(latest.3, lab = 'egfr'), anyIf(latest.2, lab = 'egfr'),
             anyIf(latest.4, lab = 'egfr'), anyIf(latest.5, lab = 'egfr'), anyIf(previous.1, lab = 'egfr'),
             anyIf(previous.2, lab = 'egfr')),
            'Tuple(value Nullable(Float64), unit String, at Nullable(DateTime64(6, \'UTC\')), source String, code String, prev_value Nullable(Float64), prev_at Nullable(DateTime64(6, \'UTC\')))') AS egfr,
       CAST((anyIf(latest.1, lab = 'ldl'), anyIf(latest.3, lab = 'ldl'), anyIf(latest.2, lab = 'ldl'),
             anyIf(latest.4, lab = 'ldl'), anyIf(latest.5, lab = 'ldl'), anyIf(previous.1, lab = 'ldl'),
             anyIf(previous.2, lab = 'ldl')),
            'Tuple(value Nullable(Float64), unit String, at Nullable(DateTime64(6, \'UTC\')), source String, code String, prev_value Nullable(Float64), prev_at Nullable(DateTime64(6, \'UTC\')))') AS ldl,
       CAST((anyIf(latest.1, lab = 'bmi'), anyIf(latest.3, lab = 'bmi'), anyIf(latest.2, lab = 'bmi'),
             anyIf(latest.4, lab = 'bmi'), anyIf(latest.5, lab = 'bmi'), anyIf(previous.1, lab = 'bmi'),
             anyIf(previous.2, lab = 'bmi')),
            'Tuple(value Nullable(Float64), unit String, at Nullable(DateTime64(6, \'UTC\')), source String, code String, prev_value Nullable(Float64), prev_at Nullable(DateTime64(6, \'UTC\')))') AS bmi
FROM {db}.p360_lab_series GROUP BY euid;

-- Active medications: per drug (RxNorm, else NDC) the latest order or fill (by clinical time:
-- dispensed / authored; records without one rank first) is not stopped, cancelled or in error;
-- covered_until = the latest fill + its days of supply.
CREATE VIEW IF NOT EXISTS {db}.p360_medications AS
SELECT euid,
       arraySort(x -> x.display, groupArray(CAST((rxnorm, display, status, last_at, days_supply, covered_until, sources),
           'Tuple(rxnorm String, display String, status String, last_at Nullable(DateTime64(6, \'UTC\')), days_supply Nullable(Float64), covered_until Nullable(DateTime64(6, \'UTC\')), source String)'))) AS active_medications
FROM (
    SELECT m.euid AS euid, m.drug AS drug, any(m.rxnorm) AS rxnorm, argMax(m.display, m.ord) AS display,
           argMax(m.status, m.ord) AS status, max(m.at) AS last_at,
           argMaxIf(m.days_supply, m.ord, m.resource_type = 'MedicationDispense') AS days_supply,
           maxIf(m.at, m.resource_type = 'MedicationDispense')
             + toIntervalSecond(toInt64(86400 * argMaxIf(m.days_supply, m.ord, m.resource_type = 'MedicationDispense'))) AS covered_until,
           arrayStringConcat(arraySort(groupUniqArray(m.source)), ',') AS sources
    FROM (SELECT *, if(rxnorm != '', rxnorm, ndc) AS drug, coalesce(`when`, event_time) AS at,
                 (ifNull(coalesce(`when`, event_time), toDateTime64(0, 6, 'UTC')), processed_at) AS ord
          FROM {db}.medications_current WHERE euid != '') AS m
    WHERE m.drug != ''
    GROUP BY m.euid, m.drug
    HAVING status NOT IN ('stopped', 'cancelled', 'entered-in-error', 'declined')
)
GROUP BY euid;

-- The last encounter of each class (AMB, EMER, IMP, ...), with the period and reason.
CREATE VIEW IF NOT EXISTS {db}.p360_encounters AS
SELECT euid, count() AS encounter_classes, sum(n) AS encounters_count,
       arraySort(x -> x.class, groupArray(CAST((class_code, last.1, last.2, last.3, last.4, last.5, last.6, last.7),
           'Tuple(class String, class_display String, status String, start Nullable(DateTime64(6, \'UTC\')), end Nullable(DateTime64(6, \'UTC\')), reason String, location String, source String)'))) AS last_encounters
FROM (
    SELECT euid, class_code, count() AS n,
           argMax((class_display, status, period_start, period_end, arrayStringConcat(reason_displays, '; '), location, source),
                  coalesce(period_start, event_time, processed_at)) AS last
    FROM {db}.encounters_current WHERE euid != ''
    GROUP BY euid, class_code
)
GROUP BY euid;

-- Open appointments (by status) and how many times the person did not show.
CREATE VIEW IF NOT EXISTS {db}.p360_appointments AS
SELECT euid, countIf(status = 'noshow') AS no_show_count,
       arraySort(x -> x.start, groupArrayIf(CAST((start, status, appointment_type, practitioner, location, source),
           'Tuple(start Nullable(DateTime64(6, \'UTC\')), status String, type String, practitioner String, location String, source String)'),
           status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in', 'waitlist'))) AS open_appointments
FROM {db}.appointments_current WHERE euid != '' GROUP BY euid;

-- Payers (named by the Coverage, else by the Organization it points at) and claims.
CREATE VIEW IF NOT EXISTS {db}.organizations AS
SELECT concat('Organization/', id) AS ref, JSONExtractString(resource, 'name') AS name, source
FROM {db}.silver_resources FINAL WHERE resource_type = 'Organization';

CREATE VIEW IF NOT EXISTS {db}.p360_coverage AS
SELECT euid,
       arraySort(x -> x.payer, groupArray(CAST((payer, payer_id, member_id, plan, status, sources),
           'Tuple(payer String, payer_id String, member_id String, plan String, status String, source String)'))) AS payers
FROM (
    SELECT c.euid AS euid, if(c.payer_id != '', c.payer_id, c.payer_name) AS payer_key,
           anyIf(if(c.payer_name != '', c.payer_name, o.name), c.payer_name != '' OR o.name != '') AS payer,
           any(c.payer_id) AS payer_id, argMax(c.member_id, c.processed_at) AS member_id,
           anyIf(c.plan, c.plan != '') AS plan, argMax(c.status, c.processed_at) AS status,
           arrayStringConcat(arraySort(groupUniqArray(c.source)), ',') AS sources
    FROM {db}.coverages_current AS c
    LEFT JOIN {db}.organizations AS o ON o.ref = c.payer_ref
    WHERE c.euid != ''
    GROUP BY c.euid, payer_key
    HAVING status NOT IN ('cancelled', 'entered-in-error')
)
GROUP BY euid;

CREATE VIEW IF NOT EXISTS {db}.p360_claims AS
SELECT euid, countIf(resource_type = 'Claim') AS claims_count,
       sumIf(ifNull(total, 0), resource_type = 'Claim') AS claims_total,
       sumIf(ifNull(paid, 0), resource_type = 'ClaimResponse') AS claims_paid,
       arraySort(groupUniqArray(source)) AS claim_sources
FROM {db}.claims_current WHERE euid != '' AND status != 'entered-in-error' GROUP BY euid;

CREATE VIEW IF NOT EXISTS {db}.p360_immunizations AS
SELECT euid,
       arraySort(x -> x.date, groupArray(CAST((cvx, display, occurrence, status, source),
           'Tuple(cvx String, display String, date Nullable(DateTime64(6, \'UTC\')), status String, source String)'))) AS immunizations
FROM {db}.immunizations_current WHERE euid != '' AND status != 'entered-in-error' GROUP BY euid;

-- Social determinants: the measures of the person's area (public health's area observations,
-- whose subject is a Location with a postal code) and any social-history observation of the
-- person. Flags use fixed thresholds on the area measures; a patient-level finding flagged
-- abnormal by its source is a flag too.
CREATE VIEW IF NOT EXISTS {db}.sdoh_areas AS
SELECT l.postal_code AS postal_code, o.code AS measure, argMax(o.value_num, o.processed_at) AS value,
       any(o.unit) AS unit, any(o.source) AS source
FROM (SELECT concat('Location/', id) AS ref, JSONExtractString(resource, 'address', 'postalCode') AS postal_code
      FROM {db}.silver_resources FINAL WHERE resource_type = 'Location') AS l
INNER JOIN (SELECT subject_ref, code, value_num, unit, source, processed_at FROM {db}.observations FINAL
            WHERE category = 'social-history' AND startsWith(subject_ref, 'Location/')) AS o ON o.subject_ref = l.ref
WHERE l.postal_code != ''
GROUP BY l.postal_code, o.code;

CREATE VIEW IF NOT EXISTS {db}.p360_sdoh AS
SELECT euid, groupArray(CAST((measure, value, unit, scope, source),
           'Tuple(measure String, value Nullable(Float64), unit String, scope String, source String)')) AS sdoh,
       arrayFilter(f -> f != '', groupUniqArray(flag)) AS sdoh_flags
FROM (
    SELECT d.euid AS euid, a.measure AS measure, a.value AS value, a.unit AS unit, 'area' AS scope, a.source AS source,
           multiIf(a.measure = 'area_deprivation_index' AND a.value >= 0.6, 'high_area_deprivation',
                   a.measure = 'food_insecurity_rate' AND a.value >= 15, 'food_insecurity_area',
                   a.measure = 'poverty_rate' AND a.value >= 20, 'high_poverty_area',
                   a.measure = 'no_vehicle_rate' AND a.value >= 10, 'transport_barrier_area',
                   a.measure = 'broadband_access_rate' AND a.value < 80, 'low_broadband_area',
                   a.measure = 'uninsured_rate' AND a.value >= 12, 'high_uninsured_area', '') AS flag
    FROM {db}.p360_demographics AS d
    INNER JOIN {db}.sdoh_areas AS a ON a.postal_code = substring(d.postal_code, 1, 5)
    UNION ALL
    SELECT euid, if(display != '', display, code) AS measure, value_num AS value, unit, 'patient' AS scope, source,
           if(interpretation IN ('A', 'AA', 'H', 'HH', 'POS', 'DET') OR value_text IN ('true', 'yes', 'Yes'),
              concat('sdoh:', code), '') AS flag
    FROM {db}.observations_current WHERE euid != '' AND category = 'social-history'
)
GROUP BY euid;

CREATE VIEW IF NOT EXISTS {db}.patient_360 AS
SELECT p.euid AS euid, p.identifiers AS identifiers, p.sources AS sources,
       d.family AS family, d.given AS given, d.birth_date AS birth_date, d.gender AS gender, d.phone AS phone,
       d.email AS email, d.address_line AS address_line, d.city AS city, d.state AS state,
       d.postal_code AS postal_code, d.race AS race, d.ethnicity AS ethnicity, d.language AS language,
       d.deceased AS deceased, d.demographics_sources AS demographics_sources,
       c.active_conditions AS active_conditions,
       l.hba1c AS hba1c, l.egfr AS egfr, l.ldl AS ldl, l.bmi AS bmi,
       m.active_medications AS active_medications,
       e.encounters_count AS encounters_count, e.last_encounters AS last_encounters,
       a.open_appointments AS open_appointments, a.no_show_count AS no_show_count,
       cv.payers AS payers, cl.claims_count AS claims_count, cl.claims_total AS claims_total,
       cl.claims_paid AS claims_paid, cl.claim_sources AS claim_sources,
       i.immunizations AS immunizations, s.sdoh AS sdoh, s.sdoh_flags AS sdoh_flags
FROM {db}.person_records AS p
LEFT JOIN {db}.p360_demographics AS d ON d.euid = p.euid
LEFT JOIN {db}.p360_conditions AS c ON c.euid = p.euid
LEFT JOIN {db}.p360_labs AS l ON l.euid = p.euid
LEFT JOIN {db}.p360_medications AS m ON m.euid = p.euid
LEFT JOIN {db}.p360_encounters AS e ON e.euid = p.euid
LEFT JOIN {db}.p360_appointments AS a ON a.euid = p.euid
LEFT JOIN {db}.p360_coverage AS cv ON cv.euid = p.euid
LEFT JOIN {db}.p360_claims AS cl ON cl.euid = p.euid
LEFT JOIN {db}.p360_immunizations AS i ON i.euid = p.euid
LEFT JOIN {db}.p360_sdoh AS s ON s.euid = p.euid;
