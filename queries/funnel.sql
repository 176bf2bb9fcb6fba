-- funnel: conversion from lead to qualified, booked, held and won, with revenue, per first-touch source and campaign.
-- Per first-touch source and campaign: leads, how many were ever qualified or disqualified,
-- booked a call, held one (any outcome recorded; `no_shows` counts
-- those whose only outcomes were no-shows), won (an outcome SALE or WON), the revenue of the
-- wins, and the conversion rate (%) between each step.
.read queries/views.sql
WITH steps AS (
    SELECT first_touch_source AS source, first_touch_campaign AS campaign,
           count(*) AS leads,
           count(*) FILTER (WHERE ever_qualified) AS qualified,
           count(*) FILTER (WHERE ever_disqualified) AS disqualified,
           count(*) FILTER (WHERE booked) AS booked,
           count(*) FILTER (WHERE with_outcome) AS held,
           count(*) FILTER (WHERE with_outcome AND NOT showed) AS no_shows,
           count(*) FILTER (WHERE won) AS won,
           sum(revenue) AS revenue
    FROM contact_funnel
    GROUP BY ALL
)
SELECT *,
       round(100.0 * qualified / leads, 1) AS qualified_pct,
       round(100.0 * booked / nullif(qualified, 0), 1) AS booked_pct,
       round(100.0 * held / nullif(booked, 0), 1) AS held_pct,
       round(100.0 * won / nullif(held, 0), 1) AS won_pct
FROM steps
ORDER BY leads DESC, source, campaign;
