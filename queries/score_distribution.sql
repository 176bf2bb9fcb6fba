-- score_distribution: how the selected contacts' current lead scores are spread (the
-- engagement report's distribution chart). Per band and 10-point range of the current score
-- (`score_from` 0 holds 0-9, 10 holds 10-19, ...; the top of the range, 100 by default, has a
-- range of its own): the contacts in it. Contacts are those the filters select (`contacts`:
-- first seen in the period, source, account); a contact never scored is not counted.
.read queries/views.sql
WITH current_scores AS (
    SELECT contact_id,
           arg_max(score, revision) AS score,
           arg_max(band, revision) AS band
    FROM stored_lead_scores
    GROUP BY contact_id
)
SELECT s.band,
       (floor(s.score / 10) * 10)::BIGINT AS score_from,
       count(*) AS contacts
FROM current_scores s
JOIN contacts c USING (contact_id)
GROUP BY ALL
ORDER BY score_from, band;
