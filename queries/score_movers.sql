-- score_movers: the selected contacts whose lead score moved most in the period (the
-- engagement report's top movers). Changes are counted by the UTC day of their event time
-- (`from_date` to `to_date`; unset: all), and a contact's first score is not a move. Per
-- contact: the score before its first change in the period, after its last, the difference,
-- its band now and the changes made; the 20 largest differences either way, then by contact id.
-- Contacts are those the filters select (`contacts`).
.read queries/views.sql
WITH moves AS (
    SELECT contact_id,
           arg_min(previous_score, revision) AS score_before,
           arg_max(score, revision) AS score_after,
           arg_max(band, revision) AS band,
           count(DISTINCT revision) AS changes
    FROM stored_lead_scores
    WHERE previous_score IS NOT NULL
      AND in_period(CAST(epoch_us(event_time) // 86400000000 AS INTEGER) + DATE '1970-01-01')
    GROUP BY contact_id
)
SELECT m.contact_id,
       c.first_touch_source AS source,
       m.score_before,
       m.score_after,
       m.score_after - m.score_before AS change,
       m.band,
       m.changes
FROM moves m
JOIN contacts c USING (contact_id)
WHERE m.score_after <> m.score_before
ORDER BY abs(m.score_after - m.score_before) DESC, m.contact_id
LIMIT 20;
