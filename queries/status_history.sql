-- status_history: every status interval of every contact: the status, when it began, when the
-- next one began (null while it lasts) and the seconds in between. Computed from the contact
-- snapshots ordered by event time, so it is exact even when events arrived late or out of order
-- (status_transitions flags such rows `late`; this query does not need them).
-- Run from the repository root: duckdb < queries/status_history.sql
-- Another data directory:      duckdb -c "SET VARIABLE data_dir = '/srv/lake'" -c ".read queries/status_history.sql"
WITH snapshots AS (
    SELECT DISTINCT ON (event_id) contact_id, event_id, event_time, coalesce(updated_at, event_time) AS changed_at, status
    FROM read_parquet(coalesce(getvariable('data_dir'), 'data') || '/contact_events/*/*.parquet', hive_partitioning = true)
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
),
intervals AS (
    SELECT contact_id, status, started_at,
           lead(started_at) OVER (PARTITION BY contact_id ORDER BY started_at) AS ended_at
    FROM starts
)
SELECT contact_id, status, started_at, ended_at,
       date_diff('microsecond', started_at, ended_at) / 1e6 AS seconds
FROM intervals
ORDER BY contact_id, started_at;
