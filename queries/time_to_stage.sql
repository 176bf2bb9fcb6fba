-- time_to_stage: median and p90 hours to qualify, to book, and to an outcome, per week of first seen.
-- Per week of first seen (weeks start on Monday, UTC): how many contacts reached each stage
-- (qualified: ever QUALIFIED; booked: booked a call; with_outcome: an outcome recorded for the
-- first booked call), and the median and 90th percentile hours from first seen to qualified
-- (first QUALIFIED interval), from qualified to the first call booked (contacts both qualified
-- and booked), and from that booking to that call's first outcome (each outcome belongs to
-- the contact's call whose slot is nearest its start; see the outcomes view for its time).
-- With `SET VARIABLE totals = true`, one row for all weeks together (week null).
.read queries/views.sql
WITH spans AS (
    SELECT CASE WHEN getvariable('totals')::BOOLEAN THEN NULL ELSE utc_week(first_seen_at) END AS week,
           booked,
           hours_between(first_seen_at, qualified_at) AS to_qualified,
           hours_between(qualified_at, first_booked_at) AS to_booked,
           hours_between(first_booked_at, first_call_outcome_at) AS to_outcome
    FROM contact_funnel
)
SELECT week,
       count(*) AS leads,
       count(to_qualified) AS qualified,
       round(median(to_qualified), 2) AS qualify_median_h,
       round(quantile_cont(to_qualified, 0.9), 2) AS qualify_p90_h,
       count(*) FILTER (WHERE booked) AS booked,
       round(median(to_booked), 2) AS book_median_h,
       round(quantile_cont(to_booked, 0.9), 2) AS book_p90_h,
       count(to_outcome) AS with_outcome,
       round(median(to_outcome), 2) AS outcome_median_h,
       round(quantile_cont(to_outcome, 0.9), 2) AS outcome_p90_h
FROM spans
GROUP BY week
ORDER BY week;
