-- latest_status: how many contacts are in each lead status now, counting each contact once, by
-- its newest snapshot (largest event_time; ties broken by event_id so the answer is stable).
-- Run from the repository root: duckdb < queries/latest_status.sql
-- Another data directory:      duckdb -c "SET VARIABLE data_dir = '/srv/lake'" -c ".read queries/latest_status.sql"
WITH snapshots AS (
    SELECT DISTINCT ON (event_id) *
    FROM read_parquet(coalesce(getvariable('data_dir'), 'data') || '/contact_events/*/*.parquet', hive_partitioning = true)
),
latest AS (
    SELECT contact_id, arg_max(status, (event_time, event_id)) AS status
    FROM snapshots
    WHERE contact_id IS NOT NULL
    GROUP BY contact_id
)
SELECT status, count(*) AS contacts
FROM latest
GROUP BY status
ORDER BY contacts DESC, status;
