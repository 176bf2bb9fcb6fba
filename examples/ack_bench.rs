//! Acknowledgement benchmark tool, used by `scripts/bench-ack.sh`.
//!
//! ```text
//! ack_bench fsync DIR [COUNT [RATE]]            p50/p99 of a 4 KiB append + fdatasync in DIR,
//!                                               back to back or RATE times a second
//! ack_bench fsync-overwrite DIR [COUNT [RATE]]  the same over a file zero-filled and synced first
//! ack_bench noop ADDR                           a do-nothing HTTP server (200 to every POST)
//! ack_bench load URL CONNS SECS [RATE]          single-event POSTs over CONNS keep-alive
//!                                               connections for SECS seconds; closed loop, or
//!                                               open loop at RATE requests/s in total
//! ```
//! Every request carries a new contact object (unique `id`), so none is a duplicate. In open
//! loop, a pacer thread releases requests at evenly spaced times (tokio's timers tick every
//! millisecond and would release them in bursts); a request that is due while its connection
//! still waits for the previous answer is timed from when it was due, so a slow server cannot
//! hide its queueing (no coordinated omission); otherwise it is timed from when it is sent, so
//! the hand-over from the pacer is not charged to the server. Requests of the first half second
//! (a tenth of the run at most) are sent but not timed: a warm-up. Output: one JSON line; `ok`
//! and `per_sec` count the timed requests.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    match args.first().map(String::as_str) {
        Some(mode @ ("fsync" | "fsync-overwrite")) => fsync(
            &arg(1),
            args.get(2)
                .map_or(2000, |c| c.parse().unwrap_or_else(|_| usage())),
            args.get(3)
                .map(|r| r.parse::<f64>().unwrap_or_else(|_| usage())),
            mode == "fsync-overwrite",
        ),
        Some("noop") => noop(&arg(1)),
        Some("load") => {
            let num = |i: usize| arg(i).parse::<u64>().unwrap_or_else(|_| usage());
            let rate = args
                .get(4)
                .map(|r| r.parse::<f64>().unwrap_or_else(|_| usage()));
            load(&arg(1), num(2) as usize, num(3), rate);
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: ack_bench fsync DIR [COUNT [RATE]] | fsync-overwrite DIR [COUNT [RATE]] | noop ADDR | load URL CONNS SECS [RATE]"
    );
    std::process::exit(2)
}

/// Percentile of sorted microsecond samples.
fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// `count` 4 KiB writes, each followed by `fdatasync`, back to back or `rate` times a second.
/// Appends to a new file, or (`overwrite`) overwrites a file written with zeros and synced
/// beforehand: what the log's prepared segments pay per group commit (no size change, so no
/// journal commit).
fn fsync(dir: &str, count: usize, rate: Option<f64>, overwrite: bool) {
    let path = std::path::Path::new(dir).join(".ack_bench_fsync");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    if overwrite {
        use std::io::Seek;
        file.write_all(&vec![0u8; 4096 * count]).unwrap();
        file.sync_all().unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
    }
    let block = vec![0x5au8; 4096];
    let mut samples = Vec::with_capacity(count);
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's sleep precision.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
    let began = Instant::now();
    for i in 0..count {
        if let Some(rate) = rate {
            let due = began + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let start = Instant::now();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        samples.push(start.elapsed().as_micros() as u64);
    }
    std::fs::remove_file(&path).unwrap();
    report_fsync(count, samples);
}

fn report_fsync(count: usize, mut samples: Vec<u64>) {
    samples.sort_unstable();
    println!(
        r#"{{"fsync_count": {count}, "p50_us": {}, "p99_us": {}, "p999_us": {}}}"#,
        pct(&samples, 50.0),
        pct(&samples, 99.0),
        pct(&samples, 99.9)
    );
}

fn noop(addr: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = axum::Router::new().fallback(|| async { "{\"accepted\":1}" });
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

/// How long the load generator sends before it starts timing.
const WARM_UP: Duration = Duration::from_millis(500);

fn load(url: &str, conns: usize, secs: u64, rate: Option<f64>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let path = format!(
        "/{}",
        url.trim_start_matches("http://")
            .split_once('/')
            .map_or("", |(_, p)| p)
    );
    // Ids unique across runs against one data directory.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        * 1000;
    let counter = Arc::new(AtomicU64::new(0));
    // Open loop: one pacer thread releases requests at exact, evenly spaced times (tokio timers
    // tick every millisecond, which would release them in bursts) and hands each to the next
    // connection in turn.
    let period = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    // Requests of the first half second (connections, caches, allocator) are sent, not timed.
    let warmed_up = started + WARM_UP.min(Duration::from_secs(secs) / 10);
    let mut releases = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..conns {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        releases.push(tx);
        receivers.push(rx);
    }
    if let Some(period) = period {
        std::thread::spawn(move || {
            // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's sleep precision.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
            let mut due = started;
            let mut next = 0;
            while due < deadline {
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let _ = releases[next].send(due);
                next = (next + 1) % releases.len();
                due += period;
            }
        });
    } else {
        drop(releases);
    }
    let (samples, errors, elapsed) = runtime.block_on(async {
        let tasks: Vec<_> = receivers
            .into_iter()
            .map(|mut release| {
                let (authority, path, counter) = (authority.clone(), path.clone(), counter.clone());
                tokio::spawn(async move {
                    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
                    tokio::spawn(connection);
                    let mut samples = Vec::new();
                    let mut errors = 0u64;
                    // When the previous answer came back.
                    let mut previous_done = started;
                    loop {
                        // When this request was due: released by the pacer, or now (closed loop).
                        let due = match period {
                            Some(_) => match release.recv().await {
                                Some(due) => due,
                                None => break,
                            },
                            None => Instant::now(),
                        };
                        if due >= deadline {
                            break;
                        }
                        // A request due while its connection still waited for the previous answer
                        // is timed from when it was due: a slow server cannot hide its queueing.
                        // Otherwise it is timed from when it is sent, so the hand-over from the
                        // pacer thread is not charged to the server.
                        let start = if previous_done > due { due } else { Instant::now() };
                        let n = base + counter.fetch_add(1, Ordering::Relaxed);
                        let body = format!(
                            r#"[{{"id": {n}, "previewId": "contact_bench", "status": "QUALIFIED", "hookType": "Contact created", "updatedAt": "2026-03-04T10:00:00.000Z"}}]"#
                        );
                        let request = Request::post(&path)
                            .header("host", &authority)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        match sender.send_request(request).await {
                            Ok(response) => {
                                let ok = response.status() == 200;
                                let _ = response.into_body().collect().await;
                                previous_done = Instant::now();
                                if ok {
                                    if start >= warmed_up {
                                        samples.push(start.elapsed().as_micros() as u64);
                                    }
                                } else {
                                    errors += 1;
                                }
                            }
                            Err(_) => {
                                errors += 1;
                                break;
                            }
                        }
                    }
                    (samples, errors)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (s, e) = t.await.unwrap();
            all.extend(s);
            errors += e;
        }
        (all, errors, started.elapsed())
    });
    let mut samples = samples;
    samples.sort_unstable();
    println!(
        r#"{{"conns": {conns}, "rate": {}, "secs": {:.2}, "ok": {}, "errors": {errors}, "per_sec": {:.0}, "p50_us": {}, "p99_us": {}, "p999_us": {}}}"#,
        rate.map_or("null".to_string(), |r| format!("{r}")),
        elapsed.as_secs_f64(),
        samples.len(),
        samples.len() as f64 / (elapsed - (warmed_up - started)).as_secs_f64(),
        pct(&samples, 50.0),
        pct(&samples, 99.0),
        pct(&samples, 99.9)
    );
}
