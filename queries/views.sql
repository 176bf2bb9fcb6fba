-- views.sql: the views every query in this directory reads. Not a query itself: each query file
-- starts with `.read queries/views.sql` (so run them from the repository root), and
-- `hooklake query` runs this file before the query.
--
-- Data directory: the variable `data_dir` (default `data`), a local path or an object-store URL
-- DuckDB can read (`s3://bucket/lake` after `INSTALL httpfs; LOAD httpfs;` and a secret).
-- `<table>_files` (a list of files or patterns) overrides where one table is read from:
-- `hooklake query` lists the files itself (binding these views then lists no directory) and
-- points a table without any file at an empty file of its schema. DuckDB fails on a pattern
-- that matches nothing, so with the stock CLI every table needs at least one file.
--
-- Two views per table (all but rejected_events, which only a person inspecting dead letters
-- reads; read it with read_parquet directly):
-- * `stored_<table>`: every row as stored. A reader may see a row twice: while compaction
--   replaces small files by a merged one, or when two writers both wrote an event.
-- * `<table>`: each row once, deduplicated by `event_id` (and by `position` or `attribute`
--   within the event for tables with several rows per event). Counting queries read these.
-- The derived views below (contacts, status_history, calls, outcomes) read the stored rows
-- directly: every aggregate they use (min, max, arg_min, arg_max, bool_or, count of distinct
-- event ids, the first row of a window) gives the same answer when a row is repeated, and
-- skipping the deduplication halves their cost on large lakes.

-- Filters (each unset by default, which selects everything): `from_date` and `to_date` (days,
-- inclusive) select contacts by the day they were first seen, `source` by their first-touch
-- utm_source and `account_id` by their iClosed account. They narrow `contacts` and so every view
-- and query built on it (a cohort: the selected contacts' calls, outcomes and revenue, whenever
-- those happened); `calls` keeps only the selected contacts' calls while a filter is set, and the
-- per-day queries keep the days from `from_date` to `to_date`. `every_contact` is never narrowed.
-- Example: duckdb -c "SET VARIABLE from_date = '2026-03-01'" -c ".read queries/funnel.sql"
CREATE OR REPLACE TEMP MACRO in_period(day) AS
    (getvariable('from_date') IS NULL OR day >= getvariable('from_date')::DATE)
    AND (getvariable('to_date') IS NULL OR day <= getvariable('to_date')::DATE);
CREATE OR REPLACE TEMP MACRO lake_filtered() AS
    getvariable('from_date') IS NOT NULL OR getvariable('to_date') IS NOT NULL
    OR getvariable('source') IS NOT NULL OR getvariable('account_id') IS NOT NULL;

-- utc_week(ts): the Monday (UTC) of the week of a timestamp; hours_between(a, b): b - a in
-- hours. Plain arithmetic on epoch microseconds: independent of the session's TimeZone and
-- several times cheaper than calendar functions on TIMESTAMPTZ.
CREATE OR REPLACE TEMP MACRO utc_week(ts) AS
    DATE '1970-01-01' + (floor(epoch_us(ts) / 86400e6) - (floor(epoch_us(ts) / 86400e6) + 3) % 7)::INTEGER;
CREATE OR REPLACE TEMP MACRO hours_between(a, b) AS (epoch_us(b) - epoch_us(a)) / 3600e6;

CREATE OR REPLACE TEMP VIEW stored_contact_events AS
SELECT * FROM read_parquet(coalesce(getvariable('contact_events_files'), [coalesce(getvariable('data_dir'), 'data') || '/contact_events/date=*/*.parquet']), hive_partitioning = true);
CREATE OR REPLACE TEMP VIEW contact_events AS
SELECT DISTINCT ON (event_id) * FROM stored_contact_events;

CREATE OR REPLACE TEMP VIEW stored_tracking_params AS
SELECT * FROM read_parquet(coalesce(getvariable('tracking_params_files'), [coalesce(getvariable('data_dir'), 'data') || '/tracking_params/date=*/*.parquet']), hive_partitioning = true);
CREATE OR REPLACE TEMP VIEW tracking_params AS
SELECT DISTINCT ON (event_id, position) * FROM stored_tracking_params;

CREATE OR REPLACE TEMP VIEW stored_contact_answers AS
SELECT * FROM read_parquet(coalesce(getvariable('contact_answers_files'), [coalesce(getvariable('data_dir'), 'data') || '/contact_answers/date=*/*.parquet']), hive_partitioning = true);
CREATE OR REPLACE TEMP VIEW contact_answers AS
SELECT DISTINCT ON (event_id, position) * FROM stored_contact_answers;

CREATE OR REPLACE TEMP VIEW stored_call_events AS
SELECT * FROM read_parquet(coalesce(getvariable('call_events_files'), [coalesce(getvariable('data_dir'), 'data') || '/call_events/date=*/*.parquet']), hive_partitioning = true);
CREATE OR REPLACE TEMP VIEW call_events AS
SELECT DISTINCT ON (event_id) * FROM stored_call_events;

CREATE OR REPLACE TEMP VIEW stored_call_outcomes AS
SELECT * FROM read_parquet(coalesce(getvariable('call_outcomes_files'), [coalesce(getvariable('data_dir'), 'data') || '/call_outcomes/date=*/*.parquet']), hive_partitioning = true);
CREATE OR REPLACE TEMP VIEW call_outcomes AS
SELECT DISTINCT ON (event_id) * FROM stored_call_outcomes;

CREATE OR REPLACE TEMP VIEW stored_raw_events AS
SELECT * FROM read_parquet(coalesce(getvariable('raw_events_files'), [coalesce(getvariable('data_dir'), 'data') || '/raw_events/date=*/*.parquet']), hive_partitioning = true);
CREATE OR REPLACE TEMP VIEW raw_events AS
SELECT DISTINCT ON (event_id) * FROM stored_raw_events;

CREATE OR REPLACE TEMP VIEW stored_attribute_changes AS
SELECT * FROM read_parquet(coalesce(getvariable('attribute_changes_files'), [coalesce(getvariable('data_dir'), 'data') || '/attribute_changes/date=*/*.parquet']), hive_partitioning = true);
CREATE OR REPLACE TEMP VIEW attribute_changes AS
SELECT DISTINCT ON (event_id, attribute) * FROM stored_attribute_changes;

CREATE OR REPLACE TEMP VIEW stored_status_transitions AS
SELECT * FROM read_parquet(coalesce(getvariable('status_transitions_files'), [coalesce(getvariable('data_dir'), 'data') || '/status_transitions/date=*/*.parquet']), hive_partitioning = true);
CREATE OR REPLACE TEMP VIEW status_transitions AS
SELECT DISTINCT ON (event_id) * FROM stored_status_transitions;

CREATE OR REPLACE TEMP VIEW stored_lead_scores AS
SELECT * FROM read_parquet(coalesce(getvariable('lead_scores_files'), [coalesce(getvariable('data_dir'), 'data') || '/lead_scores/*/*.parquet']), hive_partitioning = true);
CREATE OR REPLACE TEMP VIEW lead_scores AS
SELECT DISTINCT ON (event_id, revision) * FROM stored_lead_scores;

-- contacts_latest: the newest snapshot of each contact by event time (ties: the larger event_id).
CREATE OR REPLACE TEMP VIEW contacts_latest AS
SELECT *
FROM stored_contact_events
WHERE contact_id IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY contact_id ORDER BY event_time DESC, event_id DESC) = 1;

-- every_contact: one row per contact, in one pass over the snapshots: its newest known preview
-- id, email, status and account, when it was first seen, its first touch, its last touch,
-- whether it was ever QUALIFIED / DISQUALIFIED, and when it first became QUALIFIED.
-- A touch is a source and a campaign taken together from one snapshot, never pieced together
-- from several (arg_min / arg_max skip nulls, so each column on its own could come from a
-- different snapshot): the first touch is the `first_utm_*` pair of the earliest snapshot that
-- sent either of them, else the `utm_*` pair of the earliest snapshot that sent either; the last
-- touch is the `utm_*` pair of the newest snapshot that sent either. A field the chosen snapshot
-- left null, or a touch no snapshot sent, is '(none)'.
CREATE OR REPLACE TEMP VIEW every_contact AS
SELECT contact_id, preview_id, email, status, account_id, first_seen_at, first_seen_date,
       coalesce(first_touch.source, '(none)') AS first_touch_source,
       coalesce(first_touch.campaign, '(none)') AS first_touch_campaign,
       coalesce(last_touch.source, '(none)') AS last_touch_source,
       coalesce(last_touch.campaign, '(none)') AS last_touch_campaign,
       ever_qualified, ever_disqualified, qualified_at
FROM (
    SELECT contact_id,
           arg_max(preview_id, event_time) AS preview_id,
           arg_max(email, event_time) AS email,
           arg_max(status, event_time) AS status,
           arg_max(account_id, event_time) AS account_id,
           min(event_time) AS first_seen_at,
           min(date) AS first_seen_date,
           coalesce(arg_min({'source': first_utm_source, 'campaign': first_utm_campaign}, event_time)
                        FILTER (WHERE first_utm_source IS NOT NULL OR first_utm_campaign IS NOT NULL),
                    arg_min({'source': utm_source, 'campaign': utm_campaign}, event_time)
                        FILTER (WHERE utm_source IS NOT NULL OR utm_campaign IS NOT NULL)) AS first_touch,
           arg_max({'source': utm_source, 'campaign': utm_campaign}, event_time)
               FILTER (WHERE utm_source IS NOT NULL OR utm_campaign IS NOT NULL) AS last_touch,
           coalesce(bool_or(upper(status) = 'QUALIFIED'), false) AS ever_qualified,
           coalesce(bool_or(upper(status) = 'DISQUALIFIED'), false) AS ever_disqualified,
           min(coalesce(updated_at, event_time)) FILTER (WHERE upper(status) = 'QUALIFIED') AS qualified_at
    FROM stored_contact_events
    WHERE contact_id IS NOT NULL
    GROUP BY contact_id
);

-- contacts: every_contact narrowed by the filters (see the top of this file).
CREATE OR REPLACE TEMP VIEW contacts AS
SELECT *
FROM every_contact
WHERE in_period(first_seen_date)
  AND (getvariable('source') IS NULL OR first_touch_source = getvariable('source')::VARCHAR)
  AND (getvariable('account_id') IS NULL OR account_id = getvariable('account_id')::BIGINT);

-- status_history: every status interval of every contact: the status, when it began (the
-- snapshot's `updated_at`), when the next one began (null while it lasts) and the seconds in
-- between. Built from the snapshots ordered by event time, so it is exact whatever order the
-- events arrived in (status_transitions flags late arrivals; this view does not need them).
-- A repeated row does not start an interval: its status equals the one before it.
CREATE OR REPLACE TEMP VIEW status_history AS
WITH ordered AS (
    SELECT contact_id, status, coalesce(updated_at, event_time) AS changed_at,
           lag(status) OVER (PARTITION BY contact_id ORDER BY event_time, event_id) AS previous_status
    FROM stored_contact_events
    WHERE contact_id IS NOT NULL AND status IS NOT NULL
),
starts AS (
    SELECT contact_id, status, changed_at AS started_at
    FROM ordered
    WHERE previous_status IS DISTINCT FROM status
)
SELECT contact_id, status, started_at,
       lead(started_at) OVER (PARTITION BY contact_id ORDER BY started_at) AS ended_at,
       (epoch_us(ended_at) - epoch_us(started_at)) / 1e6 AS seconds
FROM starts;

-- call_summaries: one row per call id: when it was booked, its latest slot and host, how often
-- it was rescheduled, whether it is cancelled, and the invitee's preview id (from
-- `invitee.previewUrl`) and email, which name its contact.
-- Cancelled: the call has a cancellation and no booking made after it, comparing the times the
-- changes were made: a cancellation's `canceled_at` (its event time), a booking's or a
-- reschedule's `booked_at` (`event.created_at`). Event times cannot decide this: a reschedule
-- carries no time of its own, so it is timed at receipt, which a replay or a late delivery
-- puts after a cancellation made later. A reschedule carries its call's original `created_at`,
-- so only a new booking (a later `created_at`) undoes a cancellation.
CREATE OR REPLACE TEMP VIEW call_summaries AS
SELECT call_id,
       coalesce(min(booked_at), min(event_time) FILTER (WHERE event_type = 'call_booked')) AS booked_at,
       arg_max(slot_start_at, (event_time, received_at)) AS slot_start_at,
       coalesce(arg_max(end_at, (event_time, received_at)) FILTER (WHERE event_type <> 'call_cancelled'),
                arg_max(slot_start_at, (event_time, received_at))) AS slot_end_at,
       coalesce(arg_max(host_name, (event_time, received_at)), '(unknown)') AS host_name,
       count(DISTINCT event_id) FILTER (WHERE event_type = 'call_rescheduled') AS reschedules,
       coalesce(max(event_time) FILTER (WHERE event_type = 'call_cancelled')
                    >= max(booked_at) FILTER (WHERE event_type <> 'call_cancelled'),
                bool_or(event_type = 'call_cancelled')) AS cancelled,
       arg_max(invitee_preview_id, (event_time, received_at)) AS preview_id,
       arg_max(lower(invitee_email), (event_time, received_at)) AS email
FROM stored_call_events
WHERE call_id IS NOT NULL
GROUP BY call_id;

-- calls: call_summaries with the contact each call belongs to (by preview id, else by email)
-- and that contact's first touch; while a filter is set, only the selected contacts' calls.
-- (contact_funnel repeats this match against the contacts it has already computed, so a query
-- reading it scans the contact snapshots once.)
CREATE OR REPLACE TEMP VIEW calls AS
WITH c AS MATERIALIZED (
    SELECT contact_id, preview_id, lower(email) AS email, first_touch_source, first_touch_campaign FROM contacts
),
by_preview AS (SELECT preview_id, min(contact_id) AS contact_id FROM c WHERE preview_id IS NOT NULL GROUP BY preview_id),
by_email AS (SELECT email, min(contact_id) AS contact_id FROM c WHERE email IS NOT NULL GROUP BY email)
SELECT s.* EXCLUDE (preview_id, email), m.contact_id, c.first_touch_source, c.first_touch_campaign
FROM call_summaries s
LEFT JOIN by_preview bp ON bp.preview_id = s.preview_id
LEFT JOIN by_email be ON be.email = s.email
CROSS JOIN LATERAL (SELECT coalesce(bp.contact_id, be.contact_id) AS contact_id) m
LEFT JOIN c ON c.contact_id = m.contact_id
WHERE NOT lake_filtered() OR c.contact_id IS NOT NULL;

-- outcomes: the latest version of each outcome record (by `outcome_id`), with when it happened
-- (`deal_created_at`, else the call's start, else its receipt: iClosed sends no outcome time),
-- whether it is a win (`SALE` or `WON`) and whether it is a no-show.
-- The latest version is the one received last (ties: the later event time, then the larger
-- event id). Event times do not order versions: a version with a deal is timed at
-- `deal_created_at` and one without at its receipt, so a deal added in a newer version (timed
-- at the deal, days back) would lose to the older version without it (timed at its receipt).
CREATE OR REPLACE TEMP VIEW outcomes AS
SELECT coalesce(outcome_id::VARCHAR, event_id) AS outcome_key, contact_id, call_start_at,
       coalesce(deal_created_at, call_start_at, received_at) AS outcome_at,
       outcome, no_sale_reason, deal_value, date,
       upper(outcome) IN ('SALE', 'WON') AS won,
       coalesce(upper(no_sale_reason) = 'NO_SHOW', false) AS no_show
FROM stored_call_outcomes
QUALIFY row_number() OVER (PARTITION BY coalesce(outcome_id::VARCHAR, event_id) ORDER BY received_at DESC, event_time DESC, event_id DESC) = 1;

-- contact_funnel: contacts with how far each got: whether it booked a call (matched as in
-- calls), its first booking and that booking's call, whether an outcome was recorded
-- (`with_outcome`), whether one of them was not a no-show (`showed`) or a win (`won`), the
-- revenue of its wins, its first outcome's time, and the first outcome of its first booked
-- call (`first_call_outcome_at`; each outcome belongs to the contact's call whose slot is
-- nearest the outcome's `call_start_at`, as in show_rate).
CREATE OR REPLACE TEMP VIEW contact_funnel AS
WITH c AS MATERIALIZED (SELECT * FROM contacts),
by_preview AS (SELECT preview_id, min(contact_id) AS contact_id FROM c WHERE preview_id IS NOT NULL GROUP BY preview_id),
by_email AS (SELECT lower(email) AS email, min(contact_id) AS contact_id FROM c WHERE email IS NOT NULL GROUP BY 1),
contact_calls AS MATERIALIZED (
    SELECT coalesce(bp.contact_id, be.contact_id) AS contact_id, s.call_id, s.booked_at, s.slot_start_at
    FROM call_summaries s
    LEFT JOIN by_preview bp ON bp.preview_id = s.preview_id
    LEFT JOIN by_email be ON be.email = s.email
    WHERE coalesce(bp.contact_id, be.contact_id) IS NOT NULL
),
booked AS (
    SELECT contact_id, min(booked_at) AS first_booked_at,
           arg_min(call_id, (booked_at, call_id)) FILTER (WHERE booked_at IS NOT NULL) AS first_call_id,
           count(*) AS calls
    FROM contact_calls
    GROUP BY contact_id
),
o AS MATERIALIZED (
    SELECT outcome_key, contact_id, call_start_at, outcome_at, no_show, won, deal_value
    FROM outcomes
    WHERE contact_id IS NOT NULL
),
results AS (
    SELECT contact_id, bool_or(NOT no_show) AS showed, bool_or(won) AS won,
           sum(deal_value) FILTER (WHERE won) AS revenue, min(outcome_at) AS first_outcome_at
    FROM o
    GROUP BY contact_id
),
-- Which call each outcome belongs to matters only for a contact with several calls (one with
-- a single call has all its outcomes on it), so only their outcomes are matched: cheaper.
outcome_calls AS (
    SELECT o.contact_id, o.outcome_at, cc.call_id, b.first_call_id
    FROM o
    JOIN booked b ON b.contact_id = o.contact_id AND b.calls > 1
    JOIN contact_calls cc ON cc.contact_id = o.contact_id
    QUALIFY row_number() OVER (
        PARTITION BY o.outcome_key
        ORDER BY abs(epoch_us(cc.slot_start_at) - epoch_us(o.call_start_at)) NULLS LAST, cc.booked_at DESC, cc.call_id) = 1
),
first_call_results AS (
    SELECT contact_id, min(outcome_at) AS first_call_outcome_at
    FROM outcome_calls
    WHERE call_id = first_call_id
    GROUP BY contact_id
)
SELECT c.*, b.contact_id IS NOT NULL AS booked, b.first_booked_at, b.first_call_id, coalesce(b.calls, 0) AS calls,
       r.contact_id IS NOT NULL AS with_outcome, coalesce(r.showed, false) AS showed,
       coalesce(r.won, false) AS won, coalesce(r.revenue, 0) AS revenue,
       r.first_outcome_at,
       CASE WHEN b.calls = 1 THEN r.first_outcome_at ELSE f.first_call_outcome_at END AS first_call_outcome_at
FROM c
LEFT JOIN booked b USING (contact_id)
LEFT JOIN results r USING (contact_id)
LEFT JOIN first_call_results f USING (contact_id);
