-- score_movement: lead-score changes per week (UTC, from Monday) and first-touch source.
-- Per week of the change's event time and the contact's first-touch source: the changes, the
-- contacts they touched, the contacts scored for the first time, the changes that raised and
-- lowered a score, those that moved a scored contact to another band (`to_<band>` for the
-- default bands), and the net points gained.
.read queries/views.sql
SELECT utc_week(s.event_time) AS week,
       coalesce(c.first_touch_source, '(none)') AS source,
       count(*) AS changes,
       count(DISTINCT s.contact_id) AS contacts,
       count(*) FILTER (WHERE s.previous_score IS NULL) AS first_scored,
       count(*) FILTER (WHERE s.score > s.previous_score) AS rose,
       count(*) FILTER (WHERE s.score < s.previous_score) AS fell,
       count(*) FILTER (WHERE s.previous_band IS NOT NULL AND s.band <> s.previous_band) AS band_changes,
       count(*) FILTER (WHERE s.previous_band IS NOT NULL AND s.band <> s.previous_band AND s.band = 'hot') AS to_hot,
       count(*) FILTER (WHERE s.previous_band IS NOT NULL AND s.band <> s.previous_band AND s.band = 'cold') AS to_cold,
       sum(s.score - coalesce(s.previous_score, 0)) AS net_points
FROM lead_scores s
LEFT JOIN contacts c USING (contact_id)
GROUP BY ALL
ORDER BY week, source;
