-- latest_status: contacts per lead status now, by each contact's newest snapshot.
-- How many contacts are in each lead status now, counting each contact once, by
-- its newest snapshot (largest event_time; ties broken by event_id so the answer is stable).
.read queries/views.sql
SELECT status, count(*) AS contacts
FROM contacts_latest
GROUP BY status
ORDER BY contacts DESC, status;
