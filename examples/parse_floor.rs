//! Parse-only floor for the batch benchmark (`scripts/bench-batch.sh`): reads an NDJSON file
//! and parses every line with serde_json into a `Value`, then discards it. Prints one JSON line.

use std::io::BufRead;
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: parse_floor FILE.ndjson");
        std::process::exit(2)
    });
    let started = Instant::now();
    let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path).unwrap());
    let (mut lines, mut bytes) = (0u64, 0u64);
    for line in reader.lines() {
        let line = line.unwrap();
        bytes += line.len() as u64 + 1;
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        std::hint::black_box(value);
        lines += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        r#"{{"lines": {lines}, "bytes": {bytes}, "secs": {secs:.3}, "per_sec": {:.0}}}"#,
        lines as f64 / secs
    );
}
