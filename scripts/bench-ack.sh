#!/usr/bin/env bash
# Acknowledgement benchmark (issue 3): acked events/s and p50/p99/p999 ack latency of
# single-event requests at 1, 16 and 256 connections, for durability = fsync and batch, next to
# the physical floor measured in the same run: the disk's 4 KiB append + fdatasync latency on the
# data directory's file system, and a do-nothing HTTP server under the same load generator.
#
# Usage: scripts/bench-ack.sh [SECONDS_PER_RUN] [DATA_DIR]
# Prints one JSON line per measurement and a markdown summary (paste it into docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
data="${2:-$(mktemp -d /var/tmp/hooklake-bench.XXXXXX)}"
mkdir -p "$data"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
echo "== building (release)" >&2
cargo build --release --quiet --bin hooklake --example ack_bench
bin="$CARGO_TARGET_DIR/release/hooklake"
bench="$CARGO_TARGET_DIR/release/examples/ack_bench"
out="$(mktemp)"
port=18480
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

run() { # label url conns [rate]
    local label=$1 url=$2 conns=$3 rate=${4:-}
    echo "== $label conns=$conns ${rate:+rate=$rate}" >&2
    local line
    line=$("$bench" load "$url" "$conns" "$secs" $rate)
    echo "{\"run\": \"$label\", ${line#\{}" | tee -a "$out"
}

echo "== fdatasync floor on $data" >&2
floor=$("$bench" fsync "$data" 2000)
echo "{\"run\": \"fsync-floor\", ${floor#\{}" | tee -a "$out"
# The same, paced like the fixed-rate runs (2000/s for as long): a disk that idles between
# syncs answers a little slower than one kept busy.
floor=$("$bench" fsync "$data" $((2000 * secs)) 2000)
echo "{\"run\": \"fsync-floor-paced\", ${floor#\{}" | tee -a "$out"
floor=$("$bench" fsync-overwrite "$data" 2000)
echo "{\"run\": \"fsync-overwrite\", ${floor#\{}" | tee -a "$out"

"$bench" noop "127.0.0.1:$port" & pids+=($!)
wait_port $port
run noop "http://127.0.0.1:$port/webhooks/iclosed" 16 2000
for c in 1 16 256; do run noop "http://127.0.0.1:$port/webhooks/iclosed" $c; done
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

start_server() { # durability
    port=$((port + 1))
    rm -rf "$data/lake"
    HOOKLAKE_DURABILITY=$1 HOOKLAKE_LOG=warn "$bin" serve --data-dir "$data/lake" --listen "127.0.0.1:$port" & pids+=($!)
    wait_port $port
    # The port answering must be this server's, not one left over from an earlier run.
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "the server on port $port did not start" >&2; exit 1; }
}
stop_server() { kill -TERM "${pids[-1]}"; wait "${pids[-1]}" || true; }

for mode in fsync batch; do
    # The fixed-rate run gets a fresh server: after a closed-loop run, a 100k-row flush may still
    # be encoding, and on 2 cores it competes with the requests (measured separately below).
    # It is repeated (REPEATS, default 3) and judged by the median: one disk hiccup of a few ms
    # moves a 5 s run's p99.
    for _ in $(seq "${REPEATS:-3}"); do
        start_server $mode
        run "$mode" "http://127.0.0.1:$port/webhooks/iclosed" 16 2000
        stop_server
    done
    start_server $mode
    for c in 1 16 256; do run "$mode" "http://127.0.0.1:$port/webhooks/iclosed" $c; done
    # Right after 256 connections: the 100k-row flushes those triggered run during this one.
    run "$mode-during-flush" "http://127.0.0.1:$port/webhooks/iclosed" 16 2000
    stop_server
done
rm -rf "$data/lake"

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
floor = next(r for r in rows if r["run"] == "fsync-floor")
paced = next(r for r in rows if r["run"] == "fsync-floor-paced")
over = next(r for r in rows if r["run"] == "fsync-overwrite")
floors = [("fsync-floor", "4 KiB append + fdatasync, back to back"),
          ("fsync-floor-paced", "4 KiB append + fdatasync, 2000/s"),
          ("fsync-overwrite", "4 KiB overwrite of zeros + fdatasync, back to back")]
print("\n| disk floor | samples | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|")
for run, what in floors:
    f = next(r for r in rows if r["run"] == run)
    print(f"| {what} | {f['fsync_count']} | {f['p50_us']/1000:.3f} | {f['p99_us']/1000:.3f} | {f['p999_us']/1000:.3f} |")
print()
print("| server | conns | offered rate | acked/s | p50 ms | p99 ms | p99.9 ms | errors |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    if r["run"].startswith("fsync-"):
        continue
    rate = "closed loop" if r["rate"] is None else f"{r['rate']:.0f}/s"
    print(f"| {r['run']} | {r['conns']} | {rate} | {r['per_sec']:.0f} | {r['p50_us']/1000:.3f} | {r['p99_us']/1000:.3f} | {r['p999_us']/1000:.3f} | {r['errors']} |")
def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
for mode in ("fsync", "batch"):
    fixed = [r for r in rows if r["run"] == mode and r["rate"] is not None]
    p50, p99 = median([r["p50_us"] for r in fixed]), median([r["p99_us"] for r in fixed])
    print(f"\n{mode} at 2000/s, median of {len(fixed)} runs: p50 {p50/1000:.3f} ms, p99 {p99/1000:.3f} ms")
    if mode == "fsync":
        for f in (floor, paced):
            print(f"- against the {f['run']}: p50 = {p50/max(f['p50_us'],1):.2f}x (target <= 1.5x), "
                  f"p99 = {p99/max(f['p99_us'],1):.2f}x (target <= 2x)")
    else:
        print(f"- p99 {p99/1000:.2f} ms (target < 5 ms)")
fs256 = [r for r in rows if r["run"] == "fsync" and r["conns"] == 256 and r["rate"] is None]
if fs256:
    print(f"fsync at 256 connections: {fs256[0]['per_sec']:.0f} acked events/s (target >= 20000)")
PY
