//! The data contract: every table of the lake, its columns in order, and what each column means.
//!
//! `docs/tables.md` is generated from these declarations (`hooklake tables > docs/tables.md`) and
//! a test fails when it is stale. Invariant: changing a column here is changing the contract;
//! every table starts with `event_id`, `event_type`, `received_at`, `event_time`.

use std::sync::Arc;

use super::contact::ColumnSet;
use super::table::{Micros, Text, table};

table! {
    /// One row per contact object (Contact created, Contact updated, Contact by status): a
    /// snapshot of the contact as iClosed sent it.
    ContactEventRow, "contact_events", sort = [contact_id, event_time, event_id], {
        /// Stable id of the source object: 32 hex digits of the SHA-256 of its canonical JSON.
        event_id: Text,
        /// Normalised event type: `contact_created`, `contact_updated` or `contact_status`.
        event_type: Text,
        /// When hooklake received the event (UTC).
        received_at: Micros,
        /// `updatedAt`, else `createdAt`, else `received_at`; names the `date=` partition.
        event_time: Micros,
        /// iClosed contact id. Source: `id`.
        contact_id: Option<i64>,
        /// iClosed account (tenant) id. Source: `accountId`.
        account_id: Option<i64>,
        /// Owner user id. Source: `userId`.
        user_id: Option<i64>,
        /// Public contact key (`contact_…`), also found in call `invitee.previewUrl`. Source: `previewId`.
        preview_id: Option<Text>,
        /// Source: `firstName`.
        first_name: Option<Text>,
        /// Source: `lastName`.
        last_name: Option<Text>,
        /// Source: `email`.
        email: Option<Text>,
        /// Source: `phoneNumber`.
        phone_number: Option<Text>,
        /// Source: `secondary_email`.
        secondary_email: Option<Text>,
        /// Source: `secondary_phoneNumber`.
        secondary_phone_number: Option<Text>,
        /// Lead status as sent, casing kept (e.g. `POTENTIAL`, `QUALIFIED`). Source: `status`.
        status: Option<Text>,
        /// Source: `createdAt`.
        created_at: Option<Micros>,
        /// Source: `updatedAt`.
        updated_at: Option<Micros>,
        /// Source: `joinedTime`.
        joined_time: Option<Micros>,
        /// IANA time zone of the contact. Source: `timeZone`.
        time_zone: Option<Text>,
        /// ISO 3166-1 alpha-2 country. Source: `country`.
        country: Option<Text>,
        /// IPv4 or IPv6 address. Source: `ipAddress`.
        ip_address: Option<Text>,
        /// Booking page (event template) id. Source: `event.id`.
        booking_event_id: Option<i64>,
        /// Source: `event.name`.
        booking_event_name: Option<Text>,
        /// e.g. `STRATEGY_EVENT`, `DISCOVERY_EVENT`. Source: `event.eventType`.
        booking_event_type: Option<Text>,
        /// Source: `event.linkPrefix`.
        booking_event_link_prefix: Option<Text>,
        /// Colour of the booking page (not in the core contract). Source: `event.color`.
        booking_event_color: Option<Text>,
        /// Last-touch UTM source. Source: `tracking.utm_source`.
        utm_source: Option<Text>,
        /// Source: `tracking.utm_medium`.
        utm_medium: Option<Text>,
        /// Source: `tracking.utm_campaign`.
        utm_campaign: Option<Text>,
        /// Source: `tracking.utm_term`.
        utm_term: Option<Text>,
        /// Source: `tracking.utm_content`.
        utm_content: Option<Text>,
        /// First-touch UTM source. Source: `tracking.first_utm_source`.
        first_utm_source: Option<Text>,
        /// Source: `tracking.first_utm_medium`.
        first_utm_medium: Option<Text>,
        /// Source: `tracking.first_utm_campaign`.
        first_utm_campaign: Option<Text>,
        /// Source: `tracking.first_utm_term`.
        first_utm_term: Option<Text>,
        /// Source: `tracking.first_utm_content`.
        first_utm_content: Option<Text>,
        /// Scheduled start of the latest call; a zone-less value is read as UTC. Source: `latestCall.dateTime`.
        latest_call_at: Option<Micros>,
        /// Source: `latestCall.duration` (minutes).
        latest_call_duration_min: Option<i64>,
        /// Host user id (not in the core contract; added for joins). Source: `latestCall.user.id`.
        latest_call_host_id: Option<i64>,
        /// `firstName lastName` of the host. Source: `latestCall.user.firstName`, `.lastName`.
        latest_call_host_name: Option<Text>,
        /// Source: `latestCall.user.email`.
        latest_call_host_email: Option<Text>,
        /// Attribute names iClosed says changed, exactly as sent; null when the key is absent.
        /// Source: `updatedAttributes`.
        updated_attributes: Option<Vec<String>>,
        /// Disqualification rules as JSON text. Source: `disqualifyingGroup`.
        disqualifying_group: Option<Text>,
        /// Source: `hookType`, as sent.
        hook_type: Option<Text>,
        /// JSON object of every key not mapped to a column, by dotted path; null when none.
        extras: Option<String>,
        /// `path: problem` for each value that could not be read as its column's type (the
        /// column is then carried, see `missing_fields`); empty when all values parsed. The
        /// value itself is in `raw_events.payload`.
        parse_errors: Vec<String>,
        /// Columns whose source key was absent from the payload (not sent as null), or sent with
        /// a value of the wrong type (named in `parse_errors`): their value is carried from the
        /// contact's last known state (left null for the contact's first event, or for an event
        /// older than that state), and change tracking sees no change. `contact_answers` /
        /// `tracking_params` mean the whole `questionsAndAnswers` / `tracking` object was absent
        /// (or not an object).
        missing_fields: ColumnSet,
        /// Rules the sent values break (the values are kept): `email_malformed`,
        /// `phone_malformed`, `status_unknown` (not in `known_statuses`), `updated_before_created`,
        /// `timestamp_in_future` (more than 5 minutes after `received_at`).
        quality_flags: Vec<String>,
    }
}

table! {
    /// One row per custom tracking parameter pair `utmKey_N` / `utmValue_N` of a contact object.
    TrackingParamRow, "tracking_params", sort = [contact_id, event_time, event_id, position], {
        /// Id of the contact object the pair came from.
        event_id: Text,
        /// Event type of that object.
        event_type: Text,
        /// When hooklake received the event (UTC).
        received_at: Micros,
        /// Event time of the contact object (see `contact_events.event_time`).
        event_time: Micros,
        /// Source: `id`.
        contact_id: Option<i64>,
        /// The `N` of `utmKey_N` (any start index, gaps kept).
        position: i64,
        /// Parameter name, e.g. `fbclid`. Source: `tracking.utmKey_N`.
        key: Option<Text>,
        /// Parameter value. Source: `tracking.utmValue_N`.
        value: Option<Text>,
    }
}

table! {
    /// One row per numbered question/answer pair of a contact object (the label-keyed copies
    /// iClosed also sends are not repeated).
    ContactAnswerRow, "contact_answers", sort = [contact_id, event_time, event_id, position], {
        /// Id of the contact object the pair came from.
        event_id: Text,
        /// Event type of that object.
        event_type: Text,
        /// When hooklake received the event (UTC).
        received_at: Micros,
        /// Event time of the contact object (see `contact_events.event_time`).
        event_time: Micros,
        /// Source: `id`.
        contact_id: Option<i64>,
        /// The `N` of `N_question`.
        position: i64,
        /// Source: `questionsAndAnswers.N_question`.
        question: Option<Text>,
        /// Source: `questionsAndAnswers.N_response` (an array answer is joined with `, `).
        response: Option<Text>,
    }
}

table! {
    /// One row per call object (Call booked, Call cancelled, Call rescheduled).
    CallEventRow, "call_events", sort = [call_id, event_time, event_id], {
        /// Stable id of the source object.
        event_id: Text,
        /// `call_booked`, `call_cancelled` or `call_rescheduled`.
        event_type: Text,
        /// When hooklake received the event (UTC).
        received_at: Micros,
        /// When the change happened: `booked_at` for a booking, `canceled_at` for a
        /// cancellation, `received_at` for a reschedule (iClosed sends no reschedule time), and
        /// `received_at` whenever the chosen time is missing.
        event_time: Micros,
        /// Call id, stable across booking, reschedule and cancel. Source: `event.uuid` (string).
        call_id: Option<Text>,
        /// e.g. `STRATEGY_CALL`, `DISCOVERY_CALL`. Source: `event.type`.
        call_type: Option<Text>,
        /// Event template id (a digit string in iClosed payloads). Source: `event_type.uuid`.
        event_type_id: Option<Text>,
        /// Source: `event_type.name`.
        event_type_name: Option<Text>,
        /// Source: `event_type.slug`.
        event_type_slug: Option<Text>,
        /// e.g. `Round Robin`. Source: `event_type.kind`.
        event_type_kind: Option<Text>,
        /// e.g. `STRATEGY_EVENT` (not in the core contract). Source: `event_type.type`.
        event_type_category: Option<Text>,
        /// Role that owns the template, e.g. `closer`, `setter` (not in the core contract).
        /// Source: `event_type.owner.type`.
        event_type_owner_type: Option<Text>,
        /// Slot start. Source: `event.utc_start_time`, else `event.start_time` (offsets honoured;
        /// a `start_time` naming another instant than `utc_start_time` is kept in `extras`).
        start_at: Option<Micros>,
        /// Slot end. Source: `event.utc_end_time`, else `event.end_time`.
        end_at: Option<Micros>,
        /// Previous slot start of a reschedule. Source: `event.old_start_time`.
        old_start_at: Option<Micros>,
        /// The call's slot start before this event: `old_start_at` when iClosed sends it, else
        /// the start hooklake last saw for this call (null for a call's first event).
        previous_start_at: Option<Micros>,
        /// The call's latest slot start at this event: `start_at`, except for a cancellation,
        /// where iClosed may send the original slot of a rescheduled call: then the latest slot
        /// hooklake saw.
        slot_start_at: Option<Micros>,
        /// When the call was booked. Source: `event.created_at`.
        booked_at: Option<Micros>,
        /// Duration in minutes (`HOURS` converted). Source: `event_type.duration`, `event_type.durationUnit`.
        duration_min: Option<i64>,
        /// Source: `event.canceled` (the strings `"true"`/`"false"` are accepted).
        canceled: Option<bool>,
        /// Source: `event.canceled_at`.
        canceled_at: Option<Micros>,
        /// Empty string becomes null. Source: `event.cancel_reason`.
        cancel_reason: Option<Text>,
        /// Source: `event.canceler_name`.
        canceler_name: Option<Text>,
        /// Source: `invitee.reschedule_reason`.
        reschedule_reason: Option<Text>,
        /// Whether iClosed flags the booking as a reschedule (not in the core contract).
        /// Source: `invitee.is_reschedule`.
        is_reschedule: Option<bool>,
        /// Invitee id (not in the core contract). Source: `invitee.uuid`.
        invitee_id: Option<Text>,
        /// Source: `invitee.email`.
        invitee_email: Option<Text>,
        /// Source: `invitee.name`.
        invitee_name: Option<Text>,
        /// Phone number for reminders (not in the core contract). Source: `invitee.text_reminder_number`.
        invitee_phone: Option<Text>,
        /// Contact `preview_id` parsed from `invitee.previewUrl` (joins to `contact_events.preview_id`).
        invitee_preview_id: Option<Text>,
        /// Primary assignee (`primary` = true), else the first. Source: `event.extended_assigned_to.*.name`
        /// (with more than one assignee, the whole object is also kept in `extras`).
        host_name: Option<Text>,
        /// Source: `event.extended_assigned_to.*.email` of the same assignee.
        host_email: Option<Text>,
        /// Setter's `firstName lastName` (not in the core contract). Source: `event.setter`.
        setter_name: Option<Text>,
        /// Source: `event.setter.email`.
        setter_email: Option<Text>,
        /// Meeting URL or place. Source: `event.location`.
        location: Option<Text>,
        /// Booking-form answers as a JSON object (not in the core contract; calls carry no
        /// contact id, so they are not rows of `contact_answers`). Source: `questions_and_responses`.
        answers: Option<Text>,
        /// Source: `tracking.utm_source`.
        utm_source: Option<Text>,
        /// Source: `tracking.utm_medium`.
        utm_medium: Option<Text>,
        /// Source: `tracking.utm_campaign`.
        utm_campaign: Option<Text>,
        /// Source: `tracking.utm_term`.
        utm_term: Option<Text>,
        /// Source: `tracking.utm_content`.
        utm_content: Option<Text>,
        /// Source: `hookType`, as sent.
        hook_type: Option<Text>,
        /// JSON object of every key not mapped to a column, by dotted path; null when none.
        extras: Option<String>,
        /// `path: problem` for each value that could not be read as its column's type.
        parse_errors: Vec<String>,
    }
}

table! {
    /// One row per call outcome object (Outcome added).
    CallOutcomeRow, "call_outcomes", sort = [contact_id, event_time, event_id], {
        /// Stable id of the source object.
        event_id: Text,
        /// `call_outcome`.
        event_type: Text,
        /// When hooklake received the event (UTC).
        received_at: Micros,
        /// `deal_created_at`, else `received_at`.
        event_time: Micros,
        /// Outcome record id. Source: `uuid` (an integer despite its name).
        outcome_id: Option<i64>,
        /// Source: `contactId`.
        contact_id: Option<i64>,
        /// Contact email (not in the core contract; joins to `call_events.invitee_email`). Source: `email`.
        contact_email: Option<Text>,
        /// Contact first name (not in the core contract). Source: `firstName`.
        contact_first_name: Option<Text>,
        /// Contact last name (not in the core contract). Source: `lastName`.
        contact_last_name: Option<Text>,
        /// Contact phone (not in the core contract). Source: `phoneNumber`.
        contact_phone_number: Option<Text>,
        /// User who recorded the outcome. Source: `userId`.
        user_id: Option<i64>,
        /// Event template id. Source: `eventId`.
        booking_event_id: Option<i64>,
        /// Source: `eventName`.
        booking_event_name: Option<Text>,
        /// Start of the call. Source: `startTime`.
        call_start_at: Option<Micros>,
        /// Length of the call in minutes (`HOURS` converted; not in the core contract).
        /// Source: `eventDuration`, `eventDurationUnit`.
        call_duration_min: Option<i64>,
        /// Source: `closerEmail`.
        closer_email: Option<Text>,
        /// e.g. `SALE`, `WON`, `NO_SALE`, raw casing kept. Source: `callOutcome`.
        outcome: Option<Text>,
        /// e.g. `NO_SHOW`, `FOLLOW_UP_SCHEDULE`. Source: `noSaleReason`.
        no_sale_reason: Option<Text>,
        /// e.g. `MONEY`, `PARTNER`. Source: `objection`.
        objection: Option<Text>,
        /// Deal value as float64 (iClosed sends a JSON number). Source: `dealValue`, else `deal.value`.
        deal_value: Option<f64>,
        /// e.g. `SALE`, `WON`, `DEPOSIT`. Source: `deal.transactionType`.
        deal_transaction_type: Option<Text>,
        /// Source: `deal.createdAt`.
        deal_created_at: Option<Micros>,
        /// Source: `productName`.
        product_name: Option<Text>,
        /// Source: `notes`.
        notes: Option<Text>,
        /// Transactions as JSON text. Source: `transaction`.
        transactions: Option<Text>,
        /// Source: `hookType`, as sent.
        hook_type: Option<Text>,
        /// JSON object of every key not mapped to a column, by dotted path; null when none.
        extras: Option<String>,
        /// `path: problem` for each value that could not be read as its column's type.
        parse_errors: Vec<String>,
    }
}

table! {
    /// One row per accepted object, of every event type including `unknown`: enough to rebuild
    /// every other table if the mapping rules change.
    RawEventRow, "raw_events", sort = [event_time, event_id], {
        /// Stable id of the object.
        event_id: Text,
        /// Normalised event type, `unknown` when it could not be routed.
        event_type: Text,
        /// When hooklake received the event (UTC).
        received_at: Micros,
        /// The event time of the typed row made from the object; `received_at` for `unknown`.
        event_time: Micros,
        /// Source: `hookType`, as sent (a non-string `hookType` is kept as JSON text).
        hook_type: Option<Text>,
        /// Request path the object arrived on (`replay:<file>` for batch input).
        source_path: Text,
        /// The object's JSON text, exactly as it arrived.
        payload: Arc<str>,
    }
}

table! {
    /// One row per attribute that changed, or that iClosed reported as changed, in a contact
    /// event, compared with the contact's previous state kept by hooklake. The first event of a
    /// contact has no rows here (there is nothing to compare with).
    AttributeChangeRow, "attribute_changes", sort = [contact_id, event_time, event_id, attribute], {
        /// Id of the contact object.
        event_id: Text,
        /// Event type of that object.
        event_type: Text,
        /// When hooklake received the event (UTC).
        received_at: Micros,
        /// Event time of the contact object (see `contact_events.event_time`).
        event_time: Micros,
        /// Source: `id`.
        contact_id: Option<i64>,
        /// The flattened column name (`email`, `utm_campaign`, `status`, ...), `answer:<question>`
        /// for a form answer, `param:<key>` for a custom tracking parameter, or iClosed's own name
        /// for a reported group in which nothing differed (`tracking`, `questionsAndAnswers`, ...).
        attribute: Text,
        /// Value in the previous state, as text.
        old_value: Option<Text>,
        /// Value in this event, as text.
        new_value: Option<Text>,
        /// iClosed listed the attribute (or its group) in `updatedAttributes`.
        reported: bool,
        /// The value differs from the previous state.
        detected: bool,
        /// The event is older (`event_time`) than the state it was compared with: it arrived
        /// late. It did not change the state, and the row compares it with that newer state.
        late: bool,
    }
}

table! {
    /// One row each time a contact's status differs from its previous status, and one when a
    /// contact is first seen (`from_status` null).
    StatusTransitionRow, "status_transitions", sort = [contact_id, event_time, event_id], {
        /// Id of the contact object.
        event_id: Text,
        /// Event type of that object.
        event_type: Text,
        /// When hooklake received the event (UTC).
        received_at: Micros,
        /// Event time of the contact object (see `contact_events.event_time`).
        event_time: Micros,
        /// Source: `id`.
        contact_id: Option<i64>,
        /// Status before; null when the contact is first seen.
        from_status: Option<Text>,
        /// Status after. Source: `status`.
        to_status: Option<Text>,
        /// When the status changed. Source: `updatedAt`, else the event time.
        transitioned_at: Micros,
        /// Seconds from the start of `from_status` to this transition; null when `from_status`
        /// is null, or began after this (late) event.
        seconds_in_from_status: Option<f64>,
        /// The contact's first-touch source at that moment. Source: `tracking.first_utm_source`.
        first_utm_source: Option<Text>,
        /// Source: `tracking.first_utm_campaign`.
        first_utm_campaign: Option<Text>,
        /// The contact's last-touch source at that moment. Source: `tracking.utm_source`.
        utm_source: Option<Text>,
        /// Source: `tracking.utm_campaign`.
        utm_campaign: Option<Text>,
        /// The event is older than the state it was compared with (it arrived late); it did not
        /// change the state. `queries/status_history.sql` gives the exact history regardless.
        late: bool,
    }
}

table! {
    /// One row per authenticated webhook request whose body could not be turned into events
    /// (a dead letter): it was answered with its 4xx and kept here, as durably as an accepted
    /// event, to be inspected and fed back with `hooklake replay --rejected` after a fix.
    /// Partitioned by the date it was received. Requests refused with 401 (no valid
    /// credentials) or 429 (rate limit), and bodies that never arrived in full (408), are not
    /// kept: anyone could fill the disk with them.
    RejectedEventRow, "rejected_events", sort = [event_time, event_id], {
        /// Id of the rejected request: 32 hex digits of the SHA-256 of its receive time, path
        /// and kept body. `hooklake replay --rejected` records the ids it replayed.
        event_id: Text,
        /// Always `rejected`.
        event_type: Text,
        /// When hooklake received the request (UTC).
        received_at: Micros,
        /// Same as `received_at`: rejected requests are partitioned by date of receipt.
        event_time: Micros,
        /// HTTP status of the answer (400, 413 or 422).
        status: i64,
        /// Short stable reason, the label counted in `hooklake_requests_total`: `invalid_json`,
        /// `invalid_utf8`, `too_deep`, `wrong_shape`, `empty_body`, `empty_array`, `too_large`,
        /// `too_many_events`, `string_too_long`.
        reason: Text,
        /// The message of the answer's `{"error": ...}`.
        error: Text,
        /// Request path, a `/t/<token>/` secret replaced by `***`; the query string (which may
        /// hold `?token=`) is not kept.
        source_path: Text,
        /// Event kind fixed by the URL (`/webhooks/iclosed/{kind}`), as its `event_type` name;
        /// null on the generic URL.
        url_kind: Option<Text>,
        /// Request headers as a JSON object (name: value, repeated names joined with `, `),
        /// without credentials: `Authorization`, `Proxy-Authorization`, `Cookie`, the HMAC
        /// signature and timestamp headers, any header whose name mentions a token, secret,
        /// signature, key or auth, and any header whose value holds a configured secret.
        headers: Text,
        /// The body exactly as received (bytes, a DuckDB `BLOB`), cut after
        /// `rejected_body_max_bytes`: `decode(body)` gives the text when `body_utf8`.
        body: Vec<u8>,
        /// Whether `body` is valid UTF-8 (a text body cut short is cut on a character boundary).
        body_utf8: bool,
        /// Whether `body` is less than the whole body (cut at `rejected_body_max_bytes`, or a
        /// body over `max_body_bytes`, which is not read to its end). A truncated body cannot be
        /// replayed.
        body_truncated: bool,
        /// Length of the whole body in bytes; null when it was over `max_body_bytes` and sent
        /// without `Content-Length`.
        body_bytes: Option<i64>,
    }
}

table! {
    /// One row each time a contact's lead score or band changes (`[scoring]` in the
    /// configuration; README.md, "Lead scoring"): the score after the flush that applied the
    /// contact's events, with the rules that matched. A contact's rows are told apart and
    /// ordered by `revision`; `queries/lead_scores.sql` gives the current score.
    LeadScoreRow, "lead_scores", sort = [contact_id, event_id, revision], {
        /// Id of the event that caused the change: the latest (by event time) of the contact's
        /// events in that flush (its own snapshots, and calls and outcomes filed under it);
        /// for a change made by decay, the event of the contact's last activity.
        event_id: Text,
        /// Event type of that event, or `score_decay` for a change made by decay.
        event_type: Text,
        /// When hooklake received that event (UTC); for decay, when the decay pass ran.
        received_at: Micros,
        /// Event time of that event; for decay, when the decay pass ran. Names the `date=` partition.
        event_time: Micros,
        /// iClosed contact id.
        contact_id: Option<i64>,
        /// 1 for the contact's first row, then one more at each row: the order of its rows
        /// (a late event's row has an older `event_time` and a higher revision).
        revision: i64,
        /// The score: the sum of the matched rules' points, decayed with the days since the
        /// contact's last activity when `half_life_days` is set, clamped to `min_score`..`max_score`.
        score: i64,
        /// The score before; null for the contact's first row.
        previous_score: Option<i64>,
        /// Band of the score (default `cold`, `warm`, `hot`).
        band: Text,
        /// Band before; null for the contact's first row.
        previous_band: Option<Text>,
        /// Sum of the matched rules' points, before decay and clamping.
        points: i64,
        /// The matched rules as a JSON array of `{"rule": id, "points": n}`, in configuration order.
        reasons: Text,
        /// Event time of the contact's latest event so far (its last activity), from which decay counts.
        last_activity_at: Micros,
    }
}

table! {
    /// One row per attempt to deliver a workflow trigger's request (`[[triggers]]`): which
    /// trigger, the fact's `webhook-id`, the answer or error, and what happens next. Written by
    /// the first flush after the attempt (a flush with no events runs for them), partitioned by
    /// the day of the attempt.
    TriggerDeliveryRow, "trigger_deliveries", sort = [trigger, webhook_id, attempt], {
        /// Name of the trigger (`[[triggers]] name`).
        trigger: Text,
        /// The `webhook-id` header: the same for every attempt at one fact.
        webhook_id: Text,
        /// 1 for the first attempt at the fact, then one more each time.
        attempt: i64,
        /// When the attempt started (UTC). Names the `date=` partition.
        event_time: Micros,
        /// The table of the fact's row: `status_transitions`, `attribute_changes`,
        /// `call_events`, `call_outcomes` or `lead_scores`.
        fact_table: Text,
        /// `event_id` of the fact's row.
        event_id: Text,
        /// HTTP status of the answer; null when there was none (connection error, timeout).
        status_code: Option<i64>,
        /// Why the attempt failed, when it did (the answer's status, a timeout, a refused
        /// connection, a redirect, a body template that could not be rendered).
        error: Option<Text>,
        /// Milliseconds from the start of the attempt to its answer or failure.
        latency_ms: Option<f64>,
        /// `delivered` (a 2xx answer), `retrying` or `given_up` (the retry schedule is used
        /// up; `hooklake triggers retry` sends it again).
        outcome: Text,
        /// When the next attempt is due; null unless `retrying`.
        next_attempt_at: Option<Micros>,
    }
}
