-- daily_events: accepted events per day (UTC date of event_time) and event type, including
-- `unknown` ones, with duplicate deliveries of one object counted once.
-- Run from the repository root: duckdb < queries/daily_events.sql
-- Another data directory:      duckdb -c "SET VARIABLE data_dir = '/srv/lake'" -c ".read queries/daily_events.sql"
SELECT date, event_type, count(DISTINCT event_id) AS events
FROM read_parquet(coalesce(getvariable('data_dir'), 'data') || '/raw_events/*/*.parquet', hive_partitioning = true)
GROUP BY ALL
ORDER BY date, event_type;
