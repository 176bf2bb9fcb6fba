-- status_history: every status interval of every contact, exact whatever the arrival order.
-- Every status interval of every contact: the status, when it began, when the
-- next one began (null while it lasts) and the seconds in between; exact even when events
-- arrived late or out of order (see the status_history view in views.sql).
.read queries/views.sql
SELECT contact_id, status, started_at, ended_at, seconds
FROM status_history
ORDER BY contact_id, started_at;
