-- data_quality: unknown event types, parse failures, late events, flags and extras keys per day.
-- Per day (the `date=` partition): events of a type hooklake could not route
-- (`unknown`, kept in raw_events), rows with values that failed to parse (`parse_errors`),
-- contact events that arrived late (older than what hooklake had already seen of the contact)
-- and changed or reported an attribute (a late event that matched the newer state leaves no
-- row to count it by), rows with a quality flag and, of those, the rows with a status outside
-- `known_statuses` (`status_unknown`), a malformed email or a malformed phone, and the
-- undocumented keys seen (`extras`), with their count. The days from `from_date` to `to_date` when set (views.sql); the other filters
-- do not apply.
.read queries/views.sql
WITH typed AS (
    SELECT date, event_id, parse_errors, extras, quality_flags FROM contact_events
    UNION ALL SELECT date, event_id, parse_errors, extras, [] FROM call_events
    UNION ALL SELECT date, event_id, parse_errors, extras, [] FROM call_outcomes
),
late AS (
    SELECT date, event_id FROM attribute_changes WHERE late
    UNION SELECT date, event_id FROM status_transitions WHERE late
),
extras_keys AS (
    SELECT date, unnest(json_keys(extras)) AS key FROM typed WHERE extras IS NOT NULL
),
days AS (
    SELECT date, 'unknown' AS kind, NULL AS key FROM raw_events WHERE event_type = 'unknown'
    UNION ALL SELECT date, 'parse', NULL FROM typed WHERE len(parse_errors) > 0
    UNION ALL SELECT date, 'flag', NULL FROM typed WHERE len(quality_flags) > 0
    UNION ALL SELECT date, unnest(list_intersect(quality_flags, ['status_unknown', 'email_malformed', 'phone_malformed'])), NULL
              FROM typed WHERE len(quality_flags) > 0
    UNION ALL SELECT date, 'late', NULL FROM late
    UNION ALL SELECT date, 'extra', key FROM extras_keys
    UNION ALL SELECT date, 'extras_row', NULL FROM typed WHERE extras IS NOT NULL
)
SELECT date,
       count(*) FILTER (WHERE kind = 'unknown') AS unknown_events,
       count(*) FILTER (WHERE kind = 'parse') AS parse_error_rows,
       count(*) FILTER (WHERE kind = 'late') AS late_events,
       count(*) FILTER (WHERE kind = 'flag') AS flagged_rows,
       count(*) FILTER (WHERE kind = 'status_unknown') AS unknown_statuses,
       count(*) FILTER (WHERE kind = 'email_malformed') AS malformed_emails,
       count(*) FILTER (WHERE kind = 'phone_malformed') AS malformed_phones,
       coalesce(string_agg(DISTINCT key, ', ' ORDER BY key) FILTER (WHERE kind = 'extra'), '') AS extras_keys,
       count(*) FILTER (WHERE kind = 'extras_row') AS rows_with_extras
FROM days
WHERE in_period(date)
GROUP BY date
ORDER BY date;
