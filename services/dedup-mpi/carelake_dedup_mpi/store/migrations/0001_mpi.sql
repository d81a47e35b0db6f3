-- The master patient index in PostgreSQL (issue 6). Applied by store/migrate.py in one transaction.
--
-- source_record.euid and link.euid always hold a *surviving* EUID: a merge re-points every record
-- of the retired person, and person.retired_into is kept one hop deep (chains are flattened), so
-- COALESCE(retired_into, euid) resolves any EUID ever issued.

CREATE TABLE person (
    euid           text PRIMARY KEY,
    seq            bigserial NOT NULL UNIQUE,           -- creation order; breaks created_at ties
    created_at     timestamptz NOT NULL,
    retired_into   text REFERENCES person (euid),       -- NULL = alive; else the surviving EUID
    retired_at     timestamptz,
    golden         jsonb NOT NULL DEFAULT '{}',
    golden_sources jsonb NOT NULL DEFAULT '{}',         -- field -> record_key it came from
    updated_at     timestamptz NOT NULL,
    CHECK (retired_into IS DISTINCT FROM euid)
);
CREATE INDEX person_retired_into ON person (retired_into) WHERE retired_into IS NOT NULL;

CREATE TABLE source_record (
    record_key    text PRIMARY KEY,                     -- "<source>|<id>"
    source        text NOT NULL,
    demographics  jsonb,                                -- PersonRecord.to_json(); NULL for a bare key
    blocking_keys text[] NOT NULL DEFAULT '{}',         -- what blocking_key holds for it
    euid          text NOT NULL REFERENCES person (euid),
    unlinkable    boolean NOT NULL DEFAULT false,
    first_seen    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX source_record_euid ON source_record (euid);

-- Only linkable records are indexed: an unlinkable record is never anyone's candidate.
-- blocking_key and link carry no foreign keys: only the store writes them, in the transaction that
-- writes their source_record, and the per-row checks cost the hot path (bench/mpi_link_speed.py).
CREATE TABLE blocking_key (
    key        text NOT NULL,
    record_key text NOT NULL,
    PRIMARY KEY (key, record_key)                       -- the index candidate lookups use
);

-- The current link of each record (its history is in mpi_event).
CREATE TABLE link (
    record_key    text PRIMARY KEY,
    euid          text NOT NULL,
    score         double precision,
    outcome       text NOT NULL,                        -- auto_link review new_person unlinkable manual
    rule          text,
    contributions jsonb NOT NULL DEFAULT '{}',
    decided_by    text NOT NULL,                        -- "matcher", "source:<s>" or an operator id
    decided_at    timestamptz NOT NULL
);
CREATE INDEX link_euid ON link (euid);

CREATE TABLE review_item (
    id             bigserial PRIMARY KEY,
    record_key     text NOT NULL REFERENCES source_record (record_key),
    candidate_euid text NOT NULL REFERENCES person (euid),
    score          double precision,
    contributions  jsonb NOT NULL DEFAULT '{}',
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'accepted', 'rejected')),
    created_at     timestamptz NOT NULL,
    decided_by     text,
    decided_at     timestamptz
);
CREATE INDEX review_item_open ON review_item (id) WHERE status = 'open';
CREATE INDEX review_item_open_record ON review_item (record_key) WHERE status = 'open';

-- Every decision, append-only (a trigger refuses UPDATE and DELETE). payload is the event exactly
-- as published (schemas/avro/mpi_link_event.avsc), occurred_at as ISO-8601.
CREATE TABLE mpi_event (
    id            bigserial PRIMARY KEY,
    event_id      text NOT NULL UNIQUE,
    event_type    text NOT NULL CHECK (event_type IN ('LINK', 'MERGE', 'UNMERGE', 'UPDATE', 'RETIRE')),
    euid          text NOT NULL,
    record_key    text NOT NULL,
    previous_euid text,
    score         double precision,
    outcome       text,
    rule          text,
    decided_by    text NOT NULL,
    contributions jsonb NOT NULL DEFAULT '{}',
    occurred_at   timestamptz NOT NULL,
    payload       jsonb NOT NULL
);
CREATE INDEX mpi_event_euid ON mpi_event (euid, id);
CREATE INDEX mpi_event_previous ON mpi_event (previous_euid, id) WHERE previous_euid IS NOT NULL;

-- Events not yet acknowledged by the broker (the service's outbox); a row is deleted once published,
-- so mpi_event itself stays untouched.
CREATE TABLE mpi_outbox (
    event_pk bigint PRIMARY KEY                           -- mpi_event.id
);

-- Every operator call, reads of PHI included.
CREATE TABLE audit (
    id     bigserial PRIMARY KEY,
    who    text NOT NULL,
    action text NOT NULL,
    target text,
    at     timestamptz NOT NULL DEFAULT now(),
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_who_at ON audit (who, at);

CREATE FUNCTION mpi_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER mpi_event_append_only BEFORE UPDATE OR DELETE ON mpi_event
    FOR EACH ROW EXECUTE FUNCTION mpi_append_only();
CREATE TRIGGER mpi_event_no_truncate BEFORE TRUNCATE ON mpi_event
    FOR EACH STATEMENT EXECUTE FUNCTION mpi_append_only();
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION mpi_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION mpi_append_only();
