-- show_rate: booked, cancelled, rescheduled, held, no-show and show rate per host and per campaign.
-- Per host, per first-touch campaign of the contact, and overall: calls booked,
-- cancelled (a cancellation and no booking made after it; see call_summaries in views.sql),
-- rescheduled (at least once), held (an outcome other than a no-show), no-shows (an outcome
-- with no_sale_reason NO_SHOW, or no outcome once `no_show_hours` (default 24) have passed
-- since the slot ended), pending (no outcome yet, the window still open), and show rate =
-- held / (held + no-shows).
-- A different window: duckdb -c "SET VARIABLE no_show_hours = 48" -c ".read queries/show_rate.sql"
.read queries/views.sql
WITH matched AS (
    -- Each outcome belongs to one call of its contact: the one whose slot is nearest its start.
    SELECT c.call_id, o.no_show
    FROM outcomes o
    JOIN calls c USING (contact_id)
    QUALIFY row_number() OVER (
        PARTITION BY o.outcome_key
        ORDER BY abs(epoch_us(c.slot_start_at) - epoch_us(o.call_start_at)) NULLS LAST, c.booked_at DESC, c.call_id) = 1
),
results AS (
    SELECT call_id, bool_or(NOT no_show) AS any_held, bool_or(no_show) AS any_no_show
    FROM matched
    GROUP BY call_id
),
per_call AS (
    SELECT c.call_id, c.host_name, coalesce(c.first_touch_campaign, '(unknown contact)') AS campaign,
           c.cancelled, c.reschedules > 0 AS rescheduled,
           NOT c.cancelled AND coalesce(r.any_held, false) AS held,
           NOT c.cancelled AND NOT coalesce(r.any_held, false)
               AND (coalesce(r.any_no_show, false)
                    OR (r.call_id IS NULL
                        AND c.slot_end_at + to_hours(coalesce(getvariable('no_show_hours'), 24)::BIGINT) < now())) AS no_show
    FROM calls c
    LEFT JOIN results r USING (call_id)
)
SELECT CASE WHEN grouping(host_name) = 1 THEN '(all)' ELSE host_name END AS host,
       CASE WHEN grouping(campaign) = 1 THEN '(all)' ELSE campaign END AS campaign,
       count(*) AS booked,
       count(*) FILTER (WHERE cancelled) AS cancelled,
       count(*) FILTER (WHERE rescheduled) AS rescheduled,
       count(*) FILTER (WHERE held) AS held,
       count(*) FILTER (WHERE no_show) AS no_shows,
       count(*) FILTER (WHERE NOT cancelled AND NOT held AND NOT no_show) AS pending,
       round(100.0 * count(*) FILTER (WHERE held) / nullif(count(*) FILTER (WHERE held OR no_show), 0), 1) AS show_rate_pct
FROM per_call
GROUP BY GROUPING SETS ((host_name), (campaign), ())
ORDER BY host = '(all)', host, campaign;
