-- lead_scores: each contact's current lead score and band, with the rules that gave it.
-- One row per scored contact, from its latest `lead_scores` row (the highest revision): the
-- score, its band, the points before decay and clamping, the matched rules with their points
-- (JSON), how many times the score or band changed, when it last changed and the contact's
-- last activity. Hottest first.
.read queries/views.sql
SELECT contact_id, score, band, points, reasons, revision AS changes,
       event_time AS changed_at, last_activity_at
FROM stored_lead_scores
QUALIFY row_number() OVER (PARTITION BY contact_id ORDER BY revision DESC) = 1
ORDER BY score DESC, contact_id;
