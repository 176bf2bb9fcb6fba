-- tracking_params: the most common custom tracking parameters and the share of leads carrying each.
-- The custom tracking parameters (`utmKey_N`: click ids and the like) by how
-- many leads carry them: leads with the key, their share of all leads (%), the events and
-- distinct values seen. While a filter is set (views.sql), only the selected contacts.
.read queries/views.sql
SELECT key,
       count(DISTINCT contact_id) AS leads,
       round(100.0 * count(DISTINCT contact_id) / (SELECT count(*) FROM contacts), 1) AS share_pct,
       count(DISTINCT event_id) AS events,
       count(DISTINCT value) AS distinct_values
FROM tracking_params
WHERE key IS NOT NULL AND contact_id IS NOT NULL
  AND (NOT lake_filtered() OR contact_id IN (SELECT contact_id FROM contacts))
GROUP BY key
ORDER BY leads DESC, key;
