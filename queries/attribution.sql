-- attribution: first-touch versus last-touch credit per utm_source / utm_campaign, side by side.
-- First touch versus last touch, side by side, per utm_source / utm_campaign:
-- leads, qualified, booked, won and revenue when each contact is credited to its first touch
-- (the earliest `first_utm_*` pair, else the earliest `utm_*` pair) and when it is credited to
-- its last touch (the newest `utm_*` pair); each touch's source and campaign come from one
-- snapshot (see contacts in views.sql).
.read queries/views.sql
WITH per_contact AS MATERIALIZED (
    SELECT first_touch_source, first_touch_campaign, last_touch_source, last_touch_campaign,
           ever_qualified, booked, won, revenue
    FROM contact_funnel
),
credited AS (
    SELECT 'first' AS model, first_touch_source AS utm_source, first_touch_campaign AS utm_campaign,
           ever_qualified, booked, won, revenue
    FROM per_contact
    UNION ALL
    SELECT 'last', last_touch_source, last_touch_campaign, ever_qualified, booked, won, revenue
    FROM per_contact
),
per_model AS (
    SELECT utm_source, utm_campaign, model,
           count(*) AS leads, count(*) FILTER (WHERE ever_qualified) AS qualified,
           count(*) FILTER (WHERE booked) AS booked, count(*) FILTER (WHERE won) AS won,
           sum(revenue) AS revenue
    FROM credited
    GROUP BY ALL
)
SELECT utm_source, utm_campaign,
       coalesce(f.leads, 0) AS first_leads, coalesce(l.leads, 0) AS last_leads,
       coalesce(f.qualified, 0) AS first_qualified, coalesce(l.qualified, 0) AS last_qualified,
       coalesce(f.booked, 0) AS first_booked, coalesce(l.booked, 0) AS last_booked,
       coalesce(f.won, 0) AS first_won, coalesce(l.won, 0) AS last_won,
       coalesce(f.revenue, 0) AS first_revenue, coalesce(l.revenue, 0) AS last_revenue
FROM (SELECT * FROM per_model WHERE model = 'first') f
FULL OUTER JOIN (SELECT * FROM per_model WHERE model = 'last') l USING (utm_source, utm_campaign)
ORDER BY utm_source, utm_campaign;
