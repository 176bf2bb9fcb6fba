-- daily_events: accepted events per day and event type, redeliveries counted once.
-- Accepted events per day (the `date=` partition: the event time's day) and event
-- type, including `unknown` ones, with duplicate deliveries of one object counted once.
.read queries/views.sql
SELECT date, event_type, count(*) AS events
FROM raw_events
GROUP BY ALL
ORDER BY date, event_type;
