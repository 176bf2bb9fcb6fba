-- daily_engagement: new and active contacts, updates, calls booked/rescheduled/cancelled, outcomes, revenue per day.
-- Per day (the `date=` partition: the event time's UTC day): new contacts
-- (first seen that day), contact updates (Contact updated / by status events), distinct active
-- contacts (with a contact event or an outcome that day), calls booked, rescheduled and
-- cancelled (call events), outcomes recorded, and the revenue of the wins recorded that day.
-- The days from `from_date` to `to_date` when set; new contacts are those `contacts` selects
-- (views.sql), the other counts are every contact's, call's and outcome's.
.read queries/views.sql
WITH activity AS (
    SELECT first_seen_date AS date, 'new' AS kind, contact_id, NULL::DOUBLE AS revenue FROM contacts
    UNION ALL SELECT date, CASE WHEN event_type = 'contact_created' THEN 'contact' ELSE 'update' END, contact_id, NULL
              FROM contact_events WHERE contact_id IS NOT NULL
    UNION ALL SELECT date, event_type, NULL, NULL FROM call_events
    UNION ALL SELECT date, 'outcome', contact_id, CASE WHEN won THEN deal_value END FROM outcomes
)
SELECT date,
       count(*) FILTER (WHERE kind = 'new') AS new_contacts,
       count(*) FILTER (WHERE kind = 'update') AS contact_updates,
       count(DISTINCT contact_id) FILTER (WHERE kind IN ('contact', 'update', 'outcome')) AS active_contacts,
       count(*) FILTER (WHERE kind = 'call_booked') AS calls_booked,
       count(*) FILTER (WHERE kind = 'call_rescheduled') AS calls_rescheduled,
       count(*) FILTER (WHERE kind = 'call_cancelled') AS calls_cancelled,
       count(*) FILTER (WHERE kind = 'outcome') AS outcomes,
       coalesce(sum(revenue), 0) AS revenue
FROM activity
WHERE in_period(date)
GROUP BY date
ORDER BY date;
