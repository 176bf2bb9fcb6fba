//! Acknowledgement benchmark tool, used by `scripts/bench-ack.sh`.
//!
//! ```text
//! ack_bench fsync DIR [COUNT]                   p50/p99 of a 4 KiB append + fdatasync in DIR
//! ack_bench noop ADDR                           a do-nothing HTTP server (200 to every POST)
//! ack_bench load URL CONNS SECS [RATE]          single-event POSTs over CONNS keep-alive
//!                                               connections for SECS seconds; closed loop, or
//!                                               open loop at RATE requests/s in total
//! ```
//! Every request carries a new contact object (unique `id`), so none is a duplicate. In open
//! loop, a request that is due while its connection still waits for the previous answer is timed
//! from when it was due, so a slow server cannot hide its queueing (no coordinated omission);
//! otherwise it is timed from when it is sent, so the load generator's own timer lateness (tokio
//! timers have 1 ms resolution) is not charged to the server. Output: one JSON line.

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
        Some("fsync") => fsync(
            &arg(1),
            args.get(2)
                .map_or(2000, |c| c.parse().unwrap_or_else(|_| usage())),
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
    eprintln!("usage: ack_bench fsync DIR [COUNT] | noop ADDR | load URL CONNS SECS [RATE]");
    std::process::exit(2)
}

/// Percentile of sorted microsecond samples.
fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}

fn fsync(dir: &str, count: usize) {
    let path = std::path::Path::new(dir).join(".ack_bench_fsync");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let block = vec![0x5au8; 4096];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        samples.push(start.elapsed().as_micros() as u64);
    }
    std::fs::remove_file(&path).unwrap();
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
    let (samples, errors, elapsed) = runtime.block_on(async {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..conns)
            .map(|c| {
                let (authority, path, counter) = (authority.clone(), path.clone(), counter.clone());
                // Open loop: each connection sends one request every `period`, staggered.
                let period = rate.map(|r| Duration::from_secs_f64(conns as f64 / r));
                let offset = period.map(|p| p.mul_f64(c as f64 / conns as f64)).unwrap_or_default();
                tokio::spawn(async move {
                    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
                    tokio::spawn(connection);
                    let mut samples = Vec::new();
                    let mut errors = 0u64;
                    let mut due = started + offset;
                    // When the previous answer came back; a request due before that waited for the
                    // server and is timed from when it was due.
                    let mut previous_done = started;
                    loop {
                        if period.is_some() {
                            tokio::time::sleep_until(due.into()).await;
                        } else {
                            due = Instant::now();
                        }
                        if due >= deadline {
                            break;
                        }
                        // Timer lateness is the load generator's, not the server's: time from the
                        // later of when the request was due and when the connection was free.
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
                                    samples.push(start.elapsed().as_micros() as u64);
                                } else {
                                    errors += 1;
                                }
                            }
                            Err(_) => {
                                errors += 1;
                                break;
                            }
                        }
                        if let Some(period) = period {
                            due += period;
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
        samples.len() as f64 / elapsed.as_secs_f64(),
        pct(&samples, 50.0),
        pct(&samples, 99.0),
        pct(&samples, 99.9)
    );
}
