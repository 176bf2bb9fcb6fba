-- funnel: conversion from lead to qualified, booked, held and won, with revenue, per first-touch source and campaign.
-- Per first-touch source and campaign: leads, how many reached each stage (a contact that
-- reached a stage counts in every stage before it): qualified (ever QUALIFIED, or further),
-- booked a call (or further), held one (any outcome recorded; `no_shows` counts those whose
-- only outcomes were no-shows), won (an outcome SALE or WON), the revenue of the wins, the
-- disqualified beside the stages, and the conversion rate (%) from each stage to the next.
-- With `SET VARIABLE totals = true`, one row '(all)' for every source and campaign together.
.read queries/views.sql
WITH stages AS (
    SELECT CASE WHEN getvariable('totals')::BOOLEAN THEN '(all)' ELSE first_touch_source END AS source,
           CASE WHEN getvariable('totals')::BOOLEAN THEN '(all)' ELSE first_touch_campaign END AS campaign,
           ever_disqualified,
           with_outcome AND won AS won,
           with_outcome AS held,
           with_outcome AND NOT showed AS no_show,
           booked OR with_outcome AS booked,
           ever_qualified OR booked OR with_outcome AS qualified,
           revenue
    FROM contact_funnel
),
steps AS (
    SELECT source, campaign,
           count(*) AS leads,
           count(*) FILTER (WHERE qualified) AS qualified,
           count(*) FILTER (WHERE ever_disqualified) AS disqualified,
           count(*) FILTER (WHERE booked) AS booked,
           count(*) FILTER (WHERE held) AS held,
           count(*) FILTER (WHERE no_show) AS no_shows,
           count(*) FILTER (WHERE won) AS won,
           coalesce(sum(revenue) FILTER (WHERE won), 0) AS revenue
    FROM stages
    GROUP BY ALL
)
SELECT *,
       round(100.0 * qualified / leads, 1) AS qualified_pct,
       round(100.0 * booked / nullif(qualified, 0), 1) AS booked_pct,
       round(100.0 * held / nullif(booked, 0), 1) AS held_pct,
       round(100.0 * won / nullif(held, 0), 1) AS won_pct
FROM steps
ORDER BY leads DESC, source, campaign;
