//! Decoding write-ahead log payloads (request entries and dead letters) from arbitrary bytes:
//! never panics, and whatever decodes encodes back to the same bytes' meaning.
#![no_main]

use hooklake::flatten::table::Table;
use hooklake::rejected::Rejection;
use hooklake::wal::Entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(entry) = Entry::decode(data) {
        assert_eq!(Entry::decode(&entry.encode()), Some(entry));
    }
    if let Some(rejection) = Rejection::decode(data) {
        assert_eq!(
            Rejection::decode(&rejection.encode()),
            Some(rejection.clone())
        );
        let row = hooklake::flatten::rejected_row(&rejection);
        hooklake::flatten::RejectedEventRow::to_batch(&[row]);
    }
});
