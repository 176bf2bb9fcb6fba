//! Batch mode: `hooklake replay FILE...` feeds exported payloads through the same pipeline.
//!
//! Input formats, detected per file: NDJSON (each line one request body: an object or an array
//! of objects; blank lines skipped), or one JSON document spanning many lines (an array of
//! objects, streamed element by element, or a single object). A line or element that is not an
//! event is reported with its file and line (or element index) and skipped; the rest is written.
//! Invariant: replay writes the same tables the server would, through [`Pipeline`], and never
//! holds more than one flush's worth of events in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::{self, BodyLimits, Envelope};
use crate::pipeline::{FlushError, FlushReason, FlushReport, Pipeline};

/// One input the replay could not use.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// File name as given (`-` for stdin).
    pub file: String,
    /// Where in the file: `line N` or `element N`.
    pub place: String,
    pub reason: String,
}

/// What a replay read and wrote.
#[derive(Debug, Default)]
pub struct Summary {
    /// Request bodies read (lines, or documents).
    pub bodies: usize,
    /// Events read, by event type.
    pub by_type: BTreeMap<&'static str, usize>,
    /// Events already written (or repeated in the input), not written again.
    pub duplicates: usize,
    pub rejected: Vec<Rejection>,
    /// Rows written, by table.
    pub rows: BTreeMap<&'static str, usize>,
    pub files_written: usize,
}

impl Summary {
    pub fn read(&self) -> usize {
        self.by_type.values().sum()
    }

    pub fn accepted(&self) -> usize {
        self.read() - self.duplicates
    }

    /// Adds what one flush wrote.
    pub fn add_flush(&mut self, report: FlushReport) {
        for (table, n) in report.rows {
            *self.rows.entry(table).or_default() += n;
        }
        self.files_written += report.files.len();
    }
}

/// Rejections shown in full in the summary; the rest are counted.
const SHOWN_REJECTIONS: usize = 50;

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bodies read: {}", self.bodies)?;
        writeln!(f, "events read: {}", self.read())?;
        for (t, n) in &self.by_type {
            writeln!(f, "  {t}: {n}")?;
        }
        writeln!(f, "duplicates skipped: {}", self.duplicates)?;
        writeln!(f, "events accepted: {}", self.accepted())?;
        writeln!(f, "rejected: {}", self.rejected.len())?;
        for r in self.rejected.iter().take(SHOWN_REJECTIONS) {
            writeln!(f, "  {}:{}: {}", r.file, r.place, r.reason)?;
        }
        if self.rejected.len() > SHOWN_REJECTIONS {
            writeln!(f, "  … and {} more", self.rejected.len() - SHOWN_REJECTIONS)?;
        }
        writeln!(f, "files written: {}", self.files_written)?;
        for (t, n) in &self.rows {
            writeln!(f, "  {t}: {n} rows")?;
        }
        Ok(())
    }
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Flush(#[from] FlushError),
    #[error(transparent)]
    Store(#[from] crate::state::StoreError),
}

/// Replays every input into `pipeline`, flushing whenever a size trigger fires and at the end.
///
/// A flush runs beside the reader: while one batch is written, the next is read and accepted.
pub async fn replay(
    pipeline: Arc<Pipeline>,
    inputs: &[PathBuf],
    limits: BodyLimits,
) -> Result<Summary, ReplayError> {
    let mut summary = Summary::default();
    let mut running = None;
    let read = read_all(&pipeline, inputs, limits, &mut summary, &mut running).await;
    // A flush in progress is seen through even when reading failed, so that what it holds is
    // committed or, on failure, back in the buffer; never cut off by the process exiting.
    let finished = finish(running, &mut summary).await;
    read?;
    finished?;
    flush(&pipeline, &mut summary).await?;
    Ok(summary)
}

/// The flush in progress started by [`Pipeline::spawn_flush`], and the signal that its files
/// are published.
struct Running {
    task: tokio::task::JoinHandle<Result<FlushReport, FlushError>>,
    published: tokio::sync::oneshot::Receiver<()>,
}

/// Reads and accepts every input; once a flush is due, waits for the one in progress (if any)
/// to publish its files, flattens the next batch while that one commits, and starts it once
/// that one is done. So at most two flushes' worth of events are held: one being written (or
/// committed), one being read (or flattened).
async fn read_all(
    pipeline: &Arc<Pipeline>,
    inputs: &[PathBuf],
    limits: BodyLimits,
    summary: &mut Summary,
    running: &mut Option<Running>,
) -> Result<(), ReplayError> {
    for input in inputs {
        let name = input.display().to_string();
        let path = input.clone();
        // Reading and parsing are blocking work; each batch is handed back to the runtime.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(4);
        let reader = tokio::task::spawn_blocking(move || read_input(&path, limits, tx));
        while let Some(item) = rx.recv().await {
            match item {
                Item::Events { events, bodies } => {
                    summary.bodies += bodies;
                    for e in &events {
                        *summary.by_type.entry(e.event_type.as_str()).or_default() += 1;
                    }
                    let outcome = pipeline.accept_unlogged(events)?;
                    summary.duplicates += outcome.duplicates.len();
                    if outcome.flush_due {
                        // Once the flush in progress has published its files, only its commit
                        // is left, on one core: the next batch is flattened meanwhile.
                        if let Some(r) = running.as_mut() {
                            let _ = (&mut r.published).await;
                        }
                        let prepared = pipeline.prepare_flush().await?;
                        finish(running.take(), summary).await?;
                        let (task, published) =
                            pipeline.spawn_flush(prepared, FlushReason::Replay).await;
                        *running = Some(Running { task, published });
                    }
                }
                Item::Rejected { place, reason } => {
                    summary.bodies += 1;
                    summary.rejected.push(Rejection {
                        file: name.clone(),
                        place,
                        reason,
                    });
                }
            }
        }
        reader
            .await
            .map_err(|e| ReplayError::Read {
                file: name.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|source| ReplayError::Read {
                file: name.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Waits for the flush in progress, if any, and adds what it wrote to `summary`.
async fn finish(running: Option<Running>, summary: &mut Summary) -> Result<(), ReplayError> {
    let Some(running) = running else {
        return Ok(());
    };
    let report = running
        .task
        .await
        .map_err(|e| FlushError::Task(e.to_string()))??;
    summary.add_flush(report);
    Ok(())
}

/// Flushes what the pipeline holds and adds what the flush wrote to `summary`.
pub(crate) async fn flush(pipeline: &Pipeline, summary: &mut Summary) -> Result<(), ReplayError> {
    summary.add_flush(pipeline.flush(FlushReason::Replay).await?);
    Ok(())
}

/// What the reader thread sends: the events of `bodies` consecutive bodies, or why a body was
/// rejected.
enum Item {
    Events {
        events: Vec<Envelope>,
        bodies: usize,
    },
    Rejected {
        place: String,
        reason: String,
    },
}

/// Reads one input (a path, or `-` for stdin) and sends its bodies.
fn read_input(
    path: &Path,
    limits: BodyLimits,
    tx: tokio::sync::mpsc::Sender<Item>,
) -> std::io::Result<()> {
    let source_path = format!("replay:{}", path.display());
    let (raw, len): (Box<dyn Read + Send>, Option<u64>) = if path == Path::new("-") {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        (Box::new(file), Some(len))
    };
    let progress = progress_bar(len, &path.display().to_string());
    let mut reader = BufReader::with_capacity(1 << 20, progress.wrap_read(raw));
    // Bodies are sent in batches of about BATCH_EVENTS events: one line is usually one event,
    // and taking them one at a time costs more than parsing them.
    let batcher = std::cell::RefCell::new(Batcher {
        tx: &tx,
        events: Vec::new(),
        bodies: 0,
    });
    let send = |item: Item| batcher.borrow_mut().send(item);

    let mut first = String::new();
    let mut line_no = 0usize;
    // Skip leading blank lines to find the first body line.
    while first.trim().is_empty() {
        first.clear();
        if reader.read_line(&mut first)? == 0 {
            progress.finish_and_clear();
            return Ok(());
        }
        line_no += 1;
    }
    let one_line_document = serde_json::from_str::<&RawValue>(first.trim()).is_ok();
    if !one_line_document && first.trim_start().starts_with('[') {
        stream_array(first, reader, &source_path, limits, &send)?;
    } else if !one_line_document && first.trim_start().starts_with('{') {
        let mut second = String::new();
        reader.read_line(&mut second)?;
        if serde_json::from_str::<&RawValue>(second.trim()).is_ok() {
            // NDJSON whose first line is broken: streamed line by line, as any NDJSON, rather
            // than read whole into memory.
            let rest = std::io::Cursor::new(second).chain(reader);
            ndjson(first, line_no, rest, &source_path, limits, &send)?;
        } else {
            let mut text = first;
            text.push_str(&second);
            reader.read_to_string(&mut text)?;
            whole_or_lines(text, line_no, &source_path, limits, &send)?;
        }
    } else {
        ndjson(first, line_no, reader, &source_path, limits, &send)?;
    }
    batcher.borrow_mut().flush();
    progress.finish_and_clear();
    Ok(())
}

/// A text starting with `{` that is not NDJSON: one object spread over lines, else lines that
/// are not whole documents, each a body of its own (so one bad line does not take the rest of
/// the file with it).
fn whole_or_lines(
    text: String,
    line_no: usize,
    source_path: &str,
    limits: BodyLimits,
    send: &dyn Fn(Item) -> bool,
) -> std::io::Result<()> {
    if serde_json::from_str::<&RawValue>(text.trim()).is_ok() {
        send(body_item(text.as_bytes(), source_path, limits, || {
            format!("line {line_no}")
        }));
        return Ok(());
    }
    let mut lines = std::io::Cursor::new(text);
    let mut first = String::new();
    lines.read_line(&mut first)?;
    ndjson(first, line_no, lines, source_path, limits, send)
}

/// Sends each non-blank line as a body, from `first` (line number `line_no`) on.
fn ndjson(
    first: String,
    mut line_no: usize,
    mut reader: impl BufRead,
    source_path: &str,
    limits: BodyLimits,
    send: &dyn Fn(Item) -> bool,
) -> std::io::Result<()> {
    let mut line = first;
    loop {
        if !line.trim().is_empty() {
            let item = body_item(line.trim_end().as_bytes(), source_path, limits, || {
                format!("line {line_no}")
            });
            if !send(item) {
                return Ok(());
            }
        }
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        line_no += 1;
    }
}

/// Events per batch the reader sends.
const BATCH_EVENTS: usize = 256;

/// Gathers the events of consecutive bodies; a rejection is sent after the events before it.
struct Batcher<'a> {
    tx: &'a tokio::sync::mpsc::Sender<Item>,
    events: Vec<Envelope>,
    bodies: usize,
}

impl Batcher<'_> {
    /// Queues or sends `item`; false once the receiver is gone.
    fn send(&mut self, item: Item) -> bool {
        match item {
            Item::Events { mut events, bodies } => {
                self.events.append(&mut events);
                self.bodies += bodies;
                self.events.len() < BATCH_EVENTS || self.flush()
            }
            rejected => self.flush() && self.tx.blocking_send(rejected).is_ok(),
        }
    }

    /// Sends the gathered events, if any.
    fn flush(&mut self) -> bool {
        if self.bodies == 0 {
            return true;
        }
        let item = Item::Events {
            events: std::mem::take(&mut self.events),
            bodies: std::mem::take(&mut self.bodies),
        };
        self.tx.blocking_send(item).is_ok()
    }
}

/// The events of one body, or why it was rejected at `place` (named only then, since nearly
/// every line is accepted: no string is made per line for it).
fn body_item(
    body: &[u8],
    source_path: &str,
    limits: BodyLimits,
    place: impl FnOnce() -> String,
) -> Item {
    match event::parse_body(
        body,
        None,
        Utc::now().timestamp_micros(),
        source_path,
        limits,
    ) {
        Ok(events) => Item::Events { events, bodies: 1 },
        Err(e) => Item::Rejected {
            place: place(),
            reason: e.to_string(),
        },
    }
}

/// Streams the elements of a JSON array spanning many lines, one event each.
fn stream_array(
    first: String,
    rest: impl BufRead,
    source_path: &str,
    limits: BodyLimits,
    send: &dyn Fn(Item) -> bool,
) -> std::io::Result<()> {
    let chained = std::io::Cursor::new(first.into_bytes()).chain(rest);
    let mut de = serde_json::Deserializer::from_reader(chained);
    // Arrays written one after the other (as `jq '.items' a.json b.json` writes them) are read
    // in turn; anything else after an array is reported, never skipped silently.
    let mut first_index = 0;
    loop {
        let seed = ArraySeed {
            source_path,
            limits,
            send,
            first_index,
        };
        match seed.deserialize(&mut de) {
            Ok(elements) => first_index += elements,
            Err(e) => {
                send(Item::Rejected {
                    place: format!("line {}", e.line()),
                    reason: format!("invalid JSON array, rest of file skipped: {e}"),
                });
                return Ok(());
            }
        }
        if de.end().is_ok() {
            return Ok(());
        }
    }
}

/// Reads one array, numbering its elements from `first_index` (elements count on across the
/// arrays of a file); gives how many it read.
struct ArraySeed<'a> {
    source_path: &'a str,
    limits: BodyLimits,
    send: &'a dyn Fn(Item) -> bool,
    first_index: usize,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_> {
    type Value = usize;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of event objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut index = self.first_index;
        while let Some(element) = seq.next_element::<Box<RawValue>>()? {
            let place = || format!("element {index}");
            let item = if element.get().starts_with('{') {
                body_item(
                    element.get().as_bytes(),
                    self.source_path,
                    self.limits,
                    place,
                )
            } else {
                Item::Rejected {
                    place: place(),
                    reason: "not a JSON object".into(),
                }
            };
            if !(self.send)(item) {
                break;
            }
            index += 1;
        }
        Ok(index - self.first_index)
    }
}

/// A byte progress bar on a terminal (hidden otherwise, e.g. in tests and pipes).
fn progress_bar(len: Option<u64>, name: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = if len.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(name.to_string());
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}
