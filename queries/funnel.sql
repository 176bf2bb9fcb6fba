-- funnel: conversion from lead to qualified, booked, held and won, with revenue, per first-touch source and campaign.
-- Per first-touch source and campaign: leads, how many were ever qualified or
-- disqualified, booked a call, held one (an outcome other than a no-show), won (an outcome
-- SALE or WON), the revenue of the wins, and the conversion rate (%) between each step.
.read queries/views.sql
WITH booked AS (
    SELECT DISTINCT contact_id FROM calls WHERE contact_id IS NOT NULL
),
results AS (
    SELECT contact_id,
           bool_or(NOT no_show) AS held,
           bool_or(won) AS won,
           sum(deal_value) FILTER (WHERE won) AS revenue
    FROM outcomes
    WHERE contact_id IS NOT NULL
    GROUP BY contact_id
),
per_contact AS (
    SELECT c.first_touch_source AS source, c.first_touch_campaign AS campaign,
           c.ever_qualified AS qualified, c.ever_disqualified AS disqualified,
           b.contact_id IS NOT NULL AS booked,
           coalesce(r.held, false) AS held, coalesce(r.won, false) AS won, r.revenue
    FROM contacts c
    LEFT JOIN booked b USING (contact_id)
    LEFT JOIN results r USING (contact_id)
),
steps AS (
    SELECT source, campaign,
           count(*) AS leads,
           count(*) FILTER (WHERE qualified) AS qualified,
           count(*) FILTER (WHERE disqualified) AS disqualified,
           count(*) FILTER (WHERE booked) AS booked,
           count(*) FILTER (WHERE held) AS held,
           count(*) FILTER (WHERE won) AS won,
           coalesce(sum(revenue), 0) AS revenue
    FROM per_contact
    GROUP BY source, campaign
)
SELECT *,
       round(100.0 * qualified / leads, 1) AS qualified_pct,
       round(100.0 * booked / nullif(qualified, 0), 1) AS booked_pct,
       round(100.0 * held / nullif(booked, 0), 1) AS held_pct,
       round(100.0 * won / nullif(held, 0), 1) AS won_pct
FROM steps
ORDER BY leads DESC, source, campaign;
