-- views.sql: the views every query in this directory reads. Not a query itself: each query file
-- starts with `.read queries/views.sql` (so run them from the repository root), and
-- `hooklake query` runs this file before the query.
--
-- Data directory: the variable `data_dir` (default `data`), a local path or an object-store URL
-- DuckDB can read (`s3://bucket/lake` after `INSTALL httpfs; LOAD httpfs;` and a secret).
-- `<table>_files` overrides the file pattern of one table (hooklake uses it for tables that
-- have no file yet).
--
-- Base views: one per table, each row once. A reader may see a file twice while compaction
-- replaces small files by a merged one, and two writers may both have written an event, so
-- rows are deduplicated by `event_id` (and by the row's position within the event for tables
-- with several rows per event).

CREATE OR REPLACE TEMP VIEW contact_events AS
SELECT DISTINCT ON (event_id) *
FROM read_parquet(coalesce(getvariable('contact_events_files'), coalesce(getvariable('data_dir'), 'data') || '/contact_events/*/*.parquet'), hive_partitioning = true);

CREATE OR REPLACE TEMP VIEW tracking_params AS
SELECT DISTINCT ON (event_id, position) *
FROM read_parquet(coalesce(getvariable('tracking_params_files'), coalesce(getvariable('data_dir'), 'data') || '/tracking_params/*/*.parquet'), hive_partitioning = true);

CREATE OR REPLACE TEMP VIEW contact_answers AS
SELECT DISTINCT ON (event_id, position) *
FROM read_parquet(coalesce(getvariable('contact_answers_files'), coalesce(getvariable('data_dir'), 'data') || '/contact_answers/*/*.parquet'), hive_partitioning = true);

CREATE OR REPLACE TEMP VIEW call_events AS
SELECT DISTINCT ON (event_id) *
FROM read_parquet(coalesce(getvariable('call_events_files'), coalesce(getvariable('data_dir'), 'data') || '/call_events/*/*.parquet'), hive_partitioning = true);

CREATE OR REPLACE TEMP VIEW call_outcomes AS
SELECT DISTINCT ON (event_id) *
FROM read_parquet(coalesce(getvariable('call_outcomes_files'), coalesce(getvariable('data_dir'), 'data') || '/call_outcomes/*/*.parquet'), hive_partitioning = true);

CREATE OR REPLACE TEMP VIEW raw_events AS
SELECT DISTINCT ON (event_id) *
FROM read_parquet(coalesce(getvariable('raw_events_files'), coalesce(getvariable('data_dir'), 'data') || '/raw_events/*/*.parquet'), hive_partitioning = true);

CREATE OR REPLACE TEMP VIEW attribute_changes AS
SELECT DISTINCT ON (event_id, attribute) *
FROM read_parquet(coalesce(getvariable('attribute_changes_files'), coalesce(getvariable('data_dir'), 'data') || '/attribute_changes/*/*.parquet'), hive_partitioning = true);

CREATE OR REPLACE TEMP VIEW status_transitions AS
SELECT DISTINCT ON (event_id) *
FROM read_parquet(coalesce(getvariable('status_transitions_files'), coalesce(getvariable('data_dir'), 'data') || '/status_transitions/*/*.parquet'), hive_partitioning = true);

-- contacts_latest: the newest snapshot of each contact by event time (ties: the larger event_id).
CREATE OR REPLACE TEMP VIEW contacts_latest AS
SELECT *
FROM contact_events
WHERE contact_id IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY contact_id ORDER BY event_time DESC, event_id DESC) = 1;

-- contacts: one row per contact: its newest snapshot's keys and last touch, when it was first
-- seen, and its first touch (the earliest `first_utm_*` sent, else the earliest `utm_*`,
-- else '(none)').
CREATE OR REPLACE TEMP VIEW contacts AS
WITH firsts AS (
    SELECT contact_id,
           min(event_time) AS first_seen_at,
           min(date) AS first_seen_date,
           arg_min(first_utm_source, event_time) FILTER (WHERE first_utm_source IS NOT NULL) AS first_source,
           arg_min(first_utm_campaign, event_time) FILTER (WHERE first_utm_campaign IS NOT NULL) AS first_campaign,
           arg_min(utm_source, event_time) FILTER (WHERE utm_source IS NOT NULL) AS earliest_source,
           arg_min(utm_campaign, event_time) FILTER (WHERE utm_campaign IS NOT NULL) AS earliest_campaign
    FROM contact_events
    WHERE contact_id IS NOT NULL
    GROUP BY contact_id
)
SELECT l.contact_id, l.preview_id, l.email, l.status,
       f.first_seen_at, f.first_seen_date,
       coalesce(f.first_source, f.earliest_source, '(none)') AS first_touch_source,
       coalesce(f.first_campaign, f.earliest_campaign, '(none)') AS first_touch_campaign,
       coalesce(l.utm_source, '(none)') AS last_touch_source,
       coalesce(l.utm_campaign, '(none)') AS last_touch_campaign
FROM contacts_latest l
JOIN firsts f USING (contact_id);

-- status_history: every status interval of every contact: the status, when it began (the
-- snapshot's `updated_at`), when the next one began (null while it lasts) and the seconds in
-- between. Built from the snapshots ordered by event time, so it is exact whatever order the
-- events arrived in (status_transitions flags late arrivals; this view does not need them).
CREATE OR REPLACE TEMP VIEW status_history AS
WITH snapshots AS (
    SELECT contact_id, event_id, event_time, coalesce(updated_at, event_time) AS changed_at, status
    FROM contact_events
    WHERE contact_id IS NOT NULL AND status IS NOT NULL
),
ordered AS (
    SELECT *, lag(status) OVER (PARTITION BY contact_id ORDER BY event_time, event_id) AS previous_status
    FROM snapshots
),
starts AS (
    SELECT contact_id, status, changed_at AS started_at
    FROM ordered
    WHERE previous_status IS DISTINCT FROM status
)
SELECT contact_id, status, started_at,
       lead(started_at) OVER (PARTITION BY contact_id ORDER BY started_at) AS ended_at,
       date_diff('microsecond', started_at, ended_at) / 1e6 AS seconds
FROM starts;

-- calls: one row per call id: when it was booked, its latest slot and host, how often it was
-- rescheduled, whether its latest event is a cancellation, and the contact it belongs to
-- (by the preview id in the invitee's URL, else by the invitee's email).
CREATE OR REPLACE TEMP VIEW calls AS
WITH per_call AS (
    SELECT call_id,
           coalesce(min(booked_at), min(event_time) FILTER (WHERE event_type = 'call_booked')) AS booked_at,
           arg_max(slot_start_at, (event_time, received_at)) FILTER (WHERE slot_start_at IS NOT NULL) AS slot_start_at,
           arg_max(end_at, (event_time, received_at)) FILTER (WHERE end_at IS NOT NULL AND event_type <> 'call_cancelled') AS slot_end_at,
           arg_max(host_name, (event_time, received_at)) FILTER (WHERE host_name IS NOT NULL) AS host_name,
           count(*) FILTER (WHERE event_type = 'call_rescheduled') AS reschedules,
           arg_max(event_type, (event_time, received_at)) = 'call_cancelled' AS cancelled,
           arg_max(invitee_preview_id, (event_time, received_at)) FILTER (WHERE invitee_preview_id IS NOT NULL) AS preview_id,
           arg_max(lower(invitee_email), (event_time, received_at)) FILTER (WHERE invitee_email IS NOT NULL) AS email
    FROM call_events
    WHERE call_id IS NOT NULL
    GROUP BY call_id
)
SELECT p.call_id, p.booked_at, p.slot_start_at, coalesce(p.slot_end_at, p.slot_start_at) AS slot_end_at,
       coalesce(p.host_name, '(unknown)') AS host_name, p.reschedules, p.cancelled,
       coalesce(by_preview.contact_id, by_email.contact_id) AS contact_id
FROM per_call p
LEFT JOIN contacts by_preview ON by_preview.preview_id = p.preview_id
LEFT JOIN contacts by_email ON by_preview.contact_id IS NULL AND lower(by_email.email) = p.email;

-- outcomes: the latest version of each outcome record (by `outcome_id`), with when it happened
-- (`deal_created_at`, else the call's start, else its receipt: iClosed sends no outcome time),
-- whether it is a win (`SALE` or `WON`) and whether it is a no-show.
CREATE OR REPLACE TEMP VIEW outcomes AS
SELECT coalesce(outcome_id::VARCHAR, event_id) AS outcome_key, contact_id, call_start_at,
       coalesce(deal_created_at, call_start_at, received_at) AS outcome_at,
       outcome, no_sale_reason, deal_value, date,
       upper(outcome) IN ('SALE', 'WON') AS won,
       coalesce(upper(no_sale_reason) = 'NO_SHOW', false) AS no_show
FROM call_outcomes
QUALIFY row_number() OVER (PARTITION BY coalesce(outcome_id::VARCHAR, event_id) ORDER BY event_time DESC, received_at DESC, event_id DESC) = 1;
