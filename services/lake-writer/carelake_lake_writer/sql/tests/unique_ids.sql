-- After FINAL every id is one row (a replay replaced, never added); one row per EUID in patient_360.
SELECT 'silver_resources' AS tbl, id, count() AS n FROM {db}.silver_resources FINAL GROUP BY id HAVING n > 1
UNION ALL SELECT 'patients', id, count() AS n FROM {db}.patients FINAL GROUP BY id HAVING n > 1
UNION ALL SELECT 'encounters', id, count() AS n FROM {db}.encounters FINAL GROUP BY id HAVING n > 1
UNION ALL SELECT 'observations', id, count() AS n FROM {db}.observations FINAL GROUP BY id HAVING n > 1
UNION ALL SELECT 'conditions', id, count() AS n FROM {db}.conditions FINAL GROUP BY id HAVING n > 1
UNION ALL SELECT 'medications', id, count() AS n FROM {db}.medications FINAL GROUP BY id HAVING n > 1
UNION ALL SELECT 'claims', id, count() AS n FROM {db}.claims FINAL GROUP BY id HAVING n > 1
UNION ALL SELECT 'appointments', id, count() AS n FROM {db}.appointments FINAL GROUP BY id HAVING n > 1
UNION ALL SELECT 'immunizations', id, count() AS n FROM {db}.immunizations FINAL GROUP BY id HAVING n > 1
UNION ALL SELECT 'coverages', id, count() AS n FROM {db}.coverages FINAL GROUP BY id HAVING n > 1
UNION ALL SELECT 'euid_map', record_key, count() AS n FROM {db}.euid_map FINAL GROUP BY record_key HAVING n > 1
UNION ALL SELECT 'raw_arrivals', id, count() AS n FROM {db}.raw_arrivals FINAL GROUP BY id HAVING n > 1
UNION ALL SELECT 'dead_letters', concat(service, ':', id), count() AS n FROM {db}.dead_letters FINAL GROUP BY service, id HAVING n > 1
UNION ALL SELECT 'patient_360', euid, count() AS n FROM {db}.patient_360 GROUP BY euid HAVING n > 1
