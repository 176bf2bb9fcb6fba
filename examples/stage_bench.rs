//! Times each stage of a flush on its own, on one thread, so that a change to one stage can be
//! measured without the noise of a whole replay (two cores shared by reader and flush, disk,
//! page cache). Reads the first LINES lines of an NDJSON file, then ROUNDS times: parses them as
//! the request path does, flattens them, tracks changes from empty states, and writes every
//! table as Parquet under a temporary directory (in /dev/shm when it exists, so the disk is not
//! timed). Prints the median and the lowest time of each stage, in microseconds per event.
//!
//! Then, per table, the time the parquet crate alone takes to encode and compress the same
//! rows (converted to Arrow and sorted beforehand, untimed; written into memory with the flush
//! files' writer properties): the part of the write stage that no change to hooklake's own code
//! can remove.
//!
//! cargo run --release --example stage_bench -- FILE [LINES, default 20000] [ROUNDS, default 7]

use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use arrow_array::RecordBatch;
use hooklake::config::Config;
use hooklake::event::{self, BodyLimits, Envelope};
use hooklake::flatten::table::Table;
use hooklake::flatten::{self, Options, Tables, changes};
use hooklake::sink::Sink;
use hooklake::sink::writer::{FileKind, WriterSettings};

/// The binary's allocator, or allocation would be timed with the system's instead (a fifth of
/// the time, with glibc's malloc).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const STAGES: [&str; 4] = ["parse", "flatten", "track", "write"];

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: stage_bench FILE.ndjson [LINES] [ROUNDS]");
        std::process::exit(2)
    };
    let number = |arg: Option<String>, default: usize| {
        arg.map_or(default, |a| {
            a.parse().unwrap_or_else(|_| {
                eprintln!("not a number: {a}");
                std::process::exit(2)
            })
        })
    };
    let max_lines = number(args.next(), 20_000);
    let rounds = number(args.next(), 7).max(1);

    let file = std::fs::File::open(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1)
    });
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .take(max_lines)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            std::process::exit(1)
        });

    // As `replay` does: freed pages are kept for reuse, not returned to the kernel. (Replay also
    // starts again with huge pages; run this with `_RJEM_MALLOC_CONF=thp:always` for that.)
    hooklake::memory::keep_freed_pages();
    let config = Config::default();
    let settings = WriterSettings {
        zstd_level: config.zstd_level,
        row_group_rows: config.row_group_rows,
        threads: 1,
    };
    let options = Options {
        threads: 1,
        ..Options::default()
    };
    let scratch = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    let sink = Sink::open(scratch.path(), settings, config.partition_offset()).expect("sink");

    let mut times: Vec<[f64; 4]> = Vec::with_capacity(rounds);
    let mut encode_times: Vec<Vec<(&'static str, f64)>> = Vec::with_capacity(rounds);
    let mut events_per_round = 0;
    for round in 0..rounds {
        let mut lap = {
            let mut last = Instant::now();
            move || {
                let now = Instant::now();
                let secs = now.duration_since(last).as_secs_f64();
                last = now;
                secs
            }
        };
        let events: Vec<Envelope> = lines
            .iter()
            .enumerate()
            .flat_map(|(i, line)| {
                event::parse_body(
                    line.as_bytes(),
                    None,
                    1_800_000_000_000_000,
                    "/replay",
                    BodyLimits::LOGGED,
                )
                .unwrap_or_else(|e| {
                    eprintln!("{path}:{}: {e}", i + 1);
                    std::process::exit(1)
                })
            })
            .collect();
        let parse = lap();
        let mut tables = flatten::flatten_with(&events, &options);
        let flatten = lap();
        let mut states = changes::ContactStates::default();
        changes::track_with(&mut tables, &mut states, 1);
        changes::track_calls(&mut tables, &mut Default::default());
        let track = lap();
        encode_times.push(encode_only(&sink, &tables));
        lap();
        sink.write(&tables, round as u64 + 1).expect("write");
        let write = lap();
        events_per_round = events.len();
        times.push([parse, flatten, track, write]);
        eprintln!("round {}/{rounds} done", round + 1);
    }

    println!(
        "{} events from {} lines, {rounds} rounds, one thread (µs per event)",
        events_per_round,
        lines.len()
    );
    let per_event = |secs: f64| secs * 1e6 / events_per_round.max(1) as f64;
    let stages = STAGES
        .iter()
        .enumerate()
        .map(|(i, stage)| (*stage, times.iter().map(|t| t[i]).collect()));
    print_table(("stage", "sum"), stages, per_event);
    println!();
    println!("parquet encoding alone, per table (µs per event)");
    let tables = encode_times[0]
        .iter()
        .enumerate()
        .map(|(i, (table, _))| (*table, encode_times.iter().map(|t| t[i].1).collect()));
    print_table(("table", "all"), tables, per_event);
}

/// Prints one row per item with the median and the lowest of its times (seconds per round,
/// shown per event), and a last row that sums each column.
fn print_table(
    (item, sum): (&str, &str),
    rows: impl Iterator<Item = (&'static str, Vec<f64>)>,
    per_event: impl Fn(f64) -> f64,
) {
    println!("| {item} | median | lowest |");
    println!("|---|---|---|");
    let mut total = (0.0, 0.0);
    for (name, mut column) in rows {
        column.sort_by(f64::total_cmp);
        let (median, lowest) = (column[column.len() / 2], column[0]);
        total.0 += median;
        total.1 += lowest;
        println!(
            "| {name} | {:.2} | {:.2} |",
            per_event(median),
            per_event(lowest)
        );
    }
    println!(
        "| {sum} | {:.2} | {:.2} |",
        per_event(total.0),
        per_event(total.1)
    );
}

/// Seconds the parquet crate takes to encode each table's rows into memory, one file per
/// partition as a flush writes them, with the rows sorted and converted to Arrow beforehand.
fn encode_only(sink: &Sink, tables: &Tables) -> Vec<(&'static str, f64)> {
    fn table<T: Table>(sink: &Sink, rows: &[T]) -> (&'static str, f64) {
        let mut by_date: std::collections::BTreeMap<String, Vec<&T>> = Default::default();
        for row in rows {
            by_date
                .entry(sink.partition_date(row.event_time()))
                .or_default()
                .push(row);
        }
        let files: Vec<Vec<RecordBatch>> = by_date
            .into_values()
            .map(|mut rows| {
                T::sort(&mut rows);
                rows.chunks(sink.settings().row_group_rows)
                    .map(T::refs_to_batch)
                    .collect()
            })
            .collect();
        let started = Instant::now();
        // The batches are dropped after the clock stops (a clone shares their buffers).
        for batches in &files {
            let encoded = sink
                .encode::<T, _>(Vec::new(), batches.iter().cloned(), FileKind::Flush)
                .expect("encode");
            std::hint::black_box(encoded);
        }
        let secs = started.elapsed().as_secs_f64();
        drop(files);
        (T::NAME, secs)
    }
    vec![
        table(sink, &tables.contact_events),
        table(sink, &tables.raw_events),
        table(sink, &tables.attribute_changes),
        table(sink, &tables.status_transitions),
        table(sink, &tables.call_events),
        table(sink, &tables.tracking_params),
        table(sink, &tables.contact_answers),
        table(sink, &tables.call_outcomes),
    ]
}
