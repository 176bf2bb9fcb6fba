-- attribute_churn: which attributes change most per week, and where updatedAttributes disagreed.
-- Per week (Monday, UTC, of the event time) and attribute: how many times it
-- changed and in how many contacts, and how often iClosed's `updatedAttributes` disagreed with
-- what changed: `unreported` = changed but not listed (counted only for events that carried an
-- `updatedAttributes` list), `reported_unchanged` = listed but nothing it names changed (a
-- group name such as `tracking` counts once per event, under its own name). Late events are
-- left out: hooklake compares them with a newer state (attribute_changes.late).
.read queries/views.sql
WITH changes AS (
    SELECT a.*, a.event_id IN (SELECT event_id FROM stored_contact_events WHERE updated_attributes IS NOT NULL) AS has_report,
           CASE WHEN a.attribute LIKE 'utm\_%' ESCAPE '\' OR a.attribute LIKE 'first\_utm\_%' ESCAPE '\'
                     OR a.attribute LIKE 'param:%' THEN 'tracking'
                WHEN a.attribute LIKE 'answer:%' THEN 'questionsAndAnswers'
                WHEN a.attribute LIKE 'booking\_event\_%' ESCAPE '\' THEN 'event'
                WHEN a.attribute LIKE 'latest\_call\_%' ESCAPE '\' THEN 'latestCall'
                ELSE a.attribute END AS report_group
    FROM attribute_changes a
    WHERE NOT a.late
),
-- Each reported attribute, or group, in which nothing changed.
reported_groups AS (
    SELECT event_id, any_value(event_time) AS event_time, report_group AS attribute
    FROM changes
    WHERE reported
    GROUP BY event_id, report_group
    HAVING NOT bool_or(detected)
),
counts AS (
    SELECT utc_week(event_time) AS week, attribute,
           count(*) AS changes, count(DISTINCT contact_id) AS contacts,
           count(*) FILTER (WHERE has_report AND NOT reported) AS unreported,
           0 AS reported_unchanged
    FROM changes
    WHERE detected
    GROUP BY ALL
    UNION ALL
    SELECT utc_week(event_time), attribute, 0, 0, 0, count(*)
    FROM reported_groups
    GROUP BY ALL
)
SELECT week, attribute, sum(changes)::BIGINT AS changes, sum(contacts)::BIGINT AS contacts,
       sum(unreported)::BIGINT AS unreported, sum(reported_unchanged)::BIGINT AS reported_unchanged
FROM counts
GROUP BY week, attribute
ORDER BY week, changes DESC, attribute;
