//! The request-body parser on arbitrary bytes: never panics, and every event it makes gets the
//! same type and id when its own text is parsed again (what recovery and rebuild rely on).
#![no_main]

use hooklake::event::{BodyLimits, Envelope, parse_body};
use libfuzzer_sys::fuzz_target;

const LIMITS: BodyLimits = BodyLimits {
    max_depth: 64,
    max_events: 1000,
    max_string_bytes: 64 * 1024,
};

fuzz_target!(|data: &[u8]| {
    let Ok(events) = parse_body(data, None, 0, "/fuzz", LIMITS) else {
        return;
    };
    assert!(!events.is_empty(), "an accepted body has events");
    for e in &events {
        let again = Envelope::parse_one(&e.raw, None, 0, "/fuzz").expect("its own text parses");
        assert_eq!(
            (again.event_id, again.event_type),
            (e.event_id.clone(), e.event_type)
        );
    }
});
