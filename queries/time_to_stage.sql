-- time_to_stage: median and p90 hours to qualify, to book, and to an outcome, per week of first seen.
-- Per week of first seen (weeks start on Monday, UTC): how many contacts reached
-- each stage, and the median and 90th percentile hours from first seen to qualified (first
-- QUALIFIED interval), from qualified to the first call booked, and from that booking to the
-- call's first outcome (see the outcomes view for the outcome time).
.read queries/views.sql
WITH booked AS (
    SELECT contact_id, min(booked_at) AS booked_at
    FROM calls
    WHERE contact_id IS NOT NULL
    GROUP BY contact_id
),
outcome AS (
    SELECT contact_id, min(outcome_at) AS outcome_at
    FROM outcomes
    WHERE contact_id IS NOT NULL
    GROUP BY contact_id
),
spans AS (
    SELECT date_trunc('week', timezone('UTC', c.first_seen_at))::DATE AS week,
           date_diff('second', c.first_seen_at, c.qualified_at) / 3600 AS to_qualified,
           date_diff('second', c.qualified_at, b.booked_at) / 3600 AS to_booked,
           date_diff('second', b.booked_at, o.outcome_at) / 3600 AS to_outcome
    FROM contacts c
    LEFT JOIN booked b USING (contact_id)
    LEFT JOIN outcome o USING (contact_id)
)
SELECT week,
       count(*) AS leads,
       count(to_qualified) AS qualified,
       round(median(to_qualified), 2) AS qualify_median_h,
       round(quantile_cont(to_qualified, 0.9), 2) AS qualify_p90_h,
       count(to_booked) AS booked,
       round(median(to_booked), 2) AS book_median_h,
       round(quantile_cont(to_booked, 0.9), 2) AS book_p90_h,
       count(to_outcome) AS with_outcome,
       round(median(to_outcome), 2) AS outcome_median_h,
       round(quantile_cont(to_outcome, 0.9), 2) AS outcome_p90_h
FROM spans
GROUP BY week
ORDER BY week;
