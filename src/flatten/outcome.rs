//! Call outcome objects -> `call_outcomes`.

use super::reader::{Notes, Obj};
use super::table::Micros;
use super::tables::CallOutcomeRow;
use super::{Head, Tables};
use crate::json::Object;

/// Flattens one outcome object and returns its event time.
pub(super) fn flatten(head: &Head, obj: &Object<'_>, out: &mut Tables) -> Micros {
    let mut notes = Notes::default();
    let mut o = Obj::root(obj);
    let mut row = CallOutcomeRow {
        event_id: head.event_id.clone(),
        event_type: head.event_type.clone(),
        received_at: head.received_at,
        outcome_id: o.int("uuid", &mut notes),
        contact_id: o.int("contactId", &mut notes),
        contact_email: o.string("email", &mut notes),
        contact_first_name: o.string("firstName", &mut notes),
        contact_last_name: o.string("lastName", &mut notes),
        contact_phone_number: o.string("phoneNumber", &mut notes),
        user_id: o.int("userId", &mut notes),
        booking_event_id: o.int("eventId", &mut notes),
        booking_event_name: o.string("eventName", &mut notes),
        call_start_at: o.timestamp("startTime", &mut notes),
        call_duration_min: super::call::minutes(
            &mut o,
            "eventDuration",
            "eventDurationUnit",
            &mut notes,
        ),
        closer_email: o.string("closerEmail", &mut notes),
        outcome: o.string("callOutcome", &mut notes),
        no_sale_reason: o.non_empty_string("noSaleReason", &mut notes),
        objection: o.non_empty_string("objection", &mut notes),
        deal_value: o.float("dealValue", &mut notes),
        product_name: o.string("productName", &mut notes),
        notes: o.string("notes", &mut notes),
        transactions: o.json("transaction"),
        hook_type: super::hook_type(&mut o),
        ..Default::default()
    };
    let mut deal = o.object("deal", &mut notes);
    row.deal_transaction_type = deal.string("transactionType", &mut notes);
    row.deal_created_at = deal.timestamp("createdAt", &mut notes);
    let deal_value = deal.float("value", &mut notes);
    // `deal.value` repeats `dealValue`; a different value is kept in extras.
    match (row.deal_value, deal_value) {
        (None, v) => row.deal_value = v,
        (Some(a), Some(b)) if a != b => {
            notes
                .extras
                .insert("deal.value".into(), serde_json::json!(b));
        }
        _ => {}
    }
    deal.finish(&mut notes);
    o.finish(&mut notes);
    row.event_time = row.deal_created_at.unwrap_or(head.received_at);
    row.extras = notes.extras_json();
    row.parse_errors = notes.parse_errors;
    let event_time = row.event_time;
    out.call_outcomes.push(row);
    event_time
}
