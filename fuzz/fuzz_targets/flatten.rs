//! The flattener and change tracking on whatever the body parser accepts: never panics, every
//! event yields its raw row, and every table converts to an Arrow batch of its schema.
#![no_main]

use std::collections::HashMap;

use hooklake::event::{BodyLimits, parse_body};
use hooklake::flatten::table::Table;
use hooklake::flatten::{self, changes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(events) = parse_body(
        data,
        None,
        1_800_000_000_000_000,
        "/fuzz",
        BodyLimits::LOGGED,
    ) else {
        return;
    };
    let mut tables = flatten::flatten(&events);
    assert_eq!(tables.raw_events.len(), events.len());
    changes::track(&mut tables, &mut changes::ContactStates::default());
    changes::track_calls(&mut tables, &mut HashMap::new());
    flatten::ContactEventRow::to_batch(&tables.contact_events);
    flatten::TrackingParamRow::to_batch(&tables.tracking_params);
    flatten::ContactAnswerRow::to_batch(&tables.contact_answers);
    flatten::CallEventRow::to_batch(&tables.call_events);
    flatten::CallOutcomeRow::to_batch(&tables.call_outcomes);
    flatten::RawEventRow::to_batch(&tables.raw_events);
    flatten::AttributeChangeRow::to_batch(&tables.attribute_changes);
    flatten::StatusTransitionRow::to_batch(&tables.status_transitions);
});
