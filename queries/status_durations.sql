-- status_durations: hours spent in each status (median, p90, count), overall and per campaign.
-- Hours spent in each status, over the intervals that have ended (median,
-- 90th percentile, count), plus how many contacts are in it now (`open`); overall
-- (campaign '(all)') and per first-touch campaign.
.read queries/views.sql
SELECT CASE WHEN grouping(c.first_touch_campaign) = 1 THEN '(all)' ELSE c.first_touch_campaign END AS campaign,
       h.status,
       count(h.seconds) AS intervals,
       count(*) FILTER (WHERE h.ended_at IS NULL) AS open,
       round(median(h.seconds) / 3600, 2) AS median_h,
       round(quantile_cont(h.seconds, 0.9) / 3600, 2) AS p90_h
FROM status_history h
JOIN contacts c USING (contact_id)
GROUP BY GROUPING SETS ((h.status), (h.status, c.first_touch_campaign))
ORDER BY campaign, h.status;
