-- Status columns hold only their FHIR R4 value set ('' = not sent); MPI events only their enum.
SELECT 'encounters.status' AS col, status AS value, count() AS n FROM {db}.encounters FINAL
WHERE status NOT IN ('', 'planned', 'arrived', 'triaged', 'in-progress', 'onleave', 'finished', 'cancelled',
                     'entered-in-error', 'unknown') GROUP BY status
UNION ALL SELECT 'observations.status', status, count() FROM {db}.observations FINAL
WHERE status NOT IN ('', 'registered', 'preliminary', 'final', 'amended', 'corrected', 'cancelled',
                     'entered-in-error', 'unknown') GROUP BY status
UNION ALL SELECT 'conditions.clinical_status', clinical_status, count() FROM {db}.conditions FINAL
WHERE clinical_status NOT IN ('', 'active', 'recurrence', 'relapse', 'inactive', 'remission', 'resolved')
GROUP BY clinical_status
UNION ALL SELECT 'medications.status', status, count() FROM {db}.medications FINAL
WHERE status NOT IN ('', 'preparation', 'in-progress', 'cancelled', 'on-hold', 'completed', 'entered-in-error',
                     'stopped', 'declined', 'unknown', 'active', 'draft') GROUP BY status
UNION ALL SELECT 'appointments.status', status, count() FROM {db}.appointments FINAL
WHERE status NOT IN ('', 'proposed', 'pending', 'booked', 'arrived', 'fulfilled', 'cancelled', 'noshow',
                     'entered-in-error', 'checked-in', 'waitlist') GROUP BY status
UNION ALL SELECT 'immunizations.status', status, count() FROM {db}.immunizations FINAL
WHERE status NOT IN ('', 'completed', 'entered-in-error', 'not-done') GROUP BY status
UNION ALL SELECT 'claims.status', status, count() FROM {db}.claims FINAL
WHERE status NOT IN ('', 'active', 'cancelled', 'draft', 'entered-in-error') GROUP BY status
UNION ALL SELECT 'coverages.status', status, count() FROM {db}.coverages FINAL
WHERE status NOT IN ('', 'active', 'cancelled', 'draft', 'entered-in-error') GROUP BY status
UNION ALL SELECT 'euid_map.event_type', event_type, count() FROM {db}.euid_map FINAL
WHERE event_type NOT IN ('LINK', 'MERGE', 'UNMERGE', 'UPDATE', 'RETIRE') GROUP BY event_type
