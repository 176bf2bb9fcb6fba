-- time_to_stage: median and p90 hours to qualify, to book, and to an outcome, per week of first seen.
-- Per week of first seen (weeks start on Monday, UTC): how many contacts reached
-- each stage, and the median and 90th percentile hours from first seen to qualified (first
-- QUALIFIED interval), from qualified to the first call booked, and from that booking to the
-- call's first outcome (see the outcomes view for the outcome time).
.read queries/views.sql
WITH spans AS (
    SELECT utc_week(first_seen_at) AS week,
           hours_between(first_seen_at, qualified_at) AS to_qualified,
           hours_between(qualified_at, first_booked_at) AS to_booked,
           hours_between(first_booked_at, first_outcome_at) AS to_outcome
    FROM contact_funnel
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
