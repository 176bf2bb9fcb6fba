#!/usr/bin/env bash
# Shared-lake benchmark (issue 21): two release receivers and a deriver on an S3 lake
# (SeaweedFS on loopback).
#   1. Throughput: the receivers (flushing every second) take LEADS generated leads'
#      deliveries (bodies of 200 events, alternating); the lake is copied to two more prefixes;
#      then `derive --once` derives all of raw_events on each copy, with no bound on a pass,
#      with the default derive_batch_events (100 000) and with 20 000; beside them, in the
#      same run, a one-process `replay` of the same file into a fourth prefix. Prints each
#      one's wall time, events per second and peak RSS.
#   2. Lag: `serve --role derive` (default poll, 10 s) runs while a client posts RATE single
#      deliveries per second for SECONDS, alternating between the receivers, which flush every
#      FLUSH seconds; then again with the receivers' flushes on the clock
#      (flush_schedule "*/FLUSH * * * * *", flush_interval_secs 0). For each derived contact row, from the Delta commit times of the files
#      holding its event: receipt to the raw_events commit, that commit to the contact_events
#      commit (the deriver's trail), and receipt to the contact_events commit; prints the median,
#      p90, p99 and maximum of each.
# Needs `weed` and the Python deltalake package (scripts/test.sh installs both).
# Usage: scripts/bench-scaleout.sh [LEADS] [RATE] [SECONDS] [FLUSH] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
leads="${1:-40000}"
rate="${2:-200}"
secs="${3:-60}"
flush="${4:-10}"
work="${5:-$(mktemp -d /var/tmp/hooklake-scaleout.XXXXXX)}"
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
echo "== building (release)" >&2
cargo build --release --quiet --bin hooklake
bin="$CARGO_TARGET_DIR/release/hooklake"
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret
export AWS_ENDPOINT_URL=http://127.0.0.1:8333 AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
rm -rf "$work/weed" && mkdir -p "$work/weed"
weed mini -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket=lake \
    -webdav=false -admin.ui=false -master.telemetry=false > "$work/weed.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/8333) 2>/dev/null && break; sleep 0.2; done
sleep 2

"$bin" gen --contacts "$leads" --seed 1 --out "$work/events.ndjson"
"$bin" gen --contacts $((rate * secs)) --days 1 --seed 7 --out "$work/steady.ndjson"
events=$(wc -l < "$work/events.ndjson")

start_receivers() { # prefix
    rm -rf "$work/r1" "$work/r2"
    HOOKLAKE_LAKE_URL="s3://lake/$1" "$bin" serve --role ingest --data-dir "$work/r1" \
        --listen 127.0.0.1:18701 2> "$work/r1.log" &
    pids+=($!)
    HOOKLAKE_LAKE_URL="s3://lake/$1" "$bin" serve --role ingest --data-dir "$work/r2" \
        --listen 127.0.0.1:18702 2> "$work/r2.log" &
    pids+=($!)
    for port in 18701 18702; do
        for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    done
}

stop_receivers() {
    pkill -TERM -f "data-dir $work/r[12]" || true
    while pgrep -f "data-dir $work/r[12]" > /dev/null; do sleep 0.2; done
}

# --- 1. throughput -------------------------------------------------------------------------
HOOKLAKE_FLUSH_INTERVAL_SECS=1 start_receivers bulk
echo "== posting $events events to two receivers in bodies of 200" >&2
python3 - "$work/events.ndjson" <<'EOF'
import sys, urllib.request
lines = open(sys.argv[1]).read().splitlines()
import time, urllib.error
for n, i in enumerate(range(0, len(lines), 200)):
    body = ("[" + ",".join(lines[i:i + 200]) + "]").encode()
    port = 18701 + n % 2
    while True:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/iclosed", data=body,
                                     headers={"content-type": "application/json"})
        try:
            urllib.request.urlopen(req).read()
            break
        except urllib.error.HTTPError as e:
            if e.code != 503:
                raise
            time.sleep(0.5)  # a full buffer: the flush catches up
EOF
stop_receivers
python3 - <<'EOF'
import os, pyarrow.fs
fs = pyarrow.fs.S3FileSystem(endpoint_override="127.0.0.1:8333", scheme="http",
                             access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"])
for info in fs.get_file_info(pyarrow.fs.FileSelector("lake/bulk", recursive=True)):
    if info.type == pyarrow.fs.FileType.File:
        for copy in ("bulk2", "bulk3"):
            fs.copy_file(info.path, f"lake/{copy}/" + info.path[len("lake/bulk/"):])
EOF
echo "== derive --once of all raw_events (unbounded, then batched), then one-process replay of the same file" >&2
derive_once() { # prefix label [batch]
    rm -rf "$work/d"
    /usr/bin/time -f "%e %M" -o "$work/time" env HOOKLAKE_LAKE_URL="s3://lake/$1" HOOKLAKE_LOG=info \
        ${3:+HOOKLAKE_DERIVE_BATCH_EVENTS=$3} \
        "$bin" derive --once --data-dir "$work/d" > "$work/derive.out" 2> "$work/derive-$1.log"
    read -r wall rss < "$work/time"
    echo "derive --once, $2: $events events in ${wall} s ($(python3 -c "print(round($events / $wall))") events/s), $((rss / 1024)) MiB peak RSS; $(cat "$work/derive.out")"
}
echo "raw_events: $(python3 -c "
import os
from deltalake import DeltaTable
o = {k: os.environ[k] for k in ('AWS_ENDPOINT_URL', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION', 'AWS_ALLOW_HTTP')}
t = DeltaTable('s3://lake/bulk/raw_events', storage_options=o)
print(len(t.file_uris()), 'files in', t.version() + 1, 'versions')")"
derive_once bulk "unbounded" 1000000000
derive_once bulk2 "batches of 100000 (default)"
derive_once bulk3 "batches of 20000" 20000
rm -rf "$work/one"
/usr/bin/time -f "%e %M" -o "$work/time" env HOOKLAKE_LAKE_URL=s3://lake/one HOOKLAKE_LOG=info \
    "$bin" replay "$work/events.ndjson" --data-dir "$work/one" > /dev/null 2> "$work/replay.log"
read -r wall rss < "$work/time"
echo "replay (one process, every table): $events events in ${wall} s ($(python3 -c "print(round($events / $wall))") events/s), $((rss / 1024)) MiB peak RSS"

# --- 2. lag under steady load --------------------------------------------------------------
steady() { # prefix label (the receivers' flush settings come from the environment)
start_receivers "$1"
rm -rf "$work/ds"
HOOKLAKE_LAKE_URL="s3://lake/$1" "$bin" serve --role derive --data-dir "$work/ds" \
    --listen 127.0.0.1:18703 2> "$work/ds-$1.log" &
local deriver=$!
pids+=($deriver)
sleep 2
echo "== posting $rate deliveries/s for $secs s to two receivers $2, deriver polling every 10 s" >&2
python3 - "$work/steady.ndjson" "$rate" "$secs" <<'EOF'
import sys, time, urllib.request
lines, rate, secs = open(sys.argv[1]).read().splitlines(), int(sys.argv[2]), int(sys.argv[3])
start = time.time()
for i, line in enumerate(lines[: rate * secs]):
    wait = start + i / rate - time.time()
    if wait > 0:
        time.sleep(wait)
    req = urllib.request.Request(f"http://127.0.0.1:{18701 + i % 2}/webhooks/iclosed",
                                 data=line.encode(), headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
late = time.time() - start - secs
print(f"posted {min(len(lines), rate * secs)} deliveries, {late:.1f} s behind schedule at the end", file=sys.stderr)
EOF
sleep $((flush + 25))
curl -s http://127.0.0.1:18703/readyz; echo
PREFIX="$1" python3 - <<'EOF'
import os, statistics
import pyarrow as pa, pyarrow.fs, pyarrow.parquet as pq
from deltalake import DeltaTable
options = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ALLOW_HTTP")}
fs = pyarrow.fs.S3FileSystem(endpoint_override="127.0.0.1:8333", scheme="http",
                             access_key=options["AWS_ACCESS_KEY_ID"], secret_key=options["AWS_SECRET_ACCESS_KEY"])

def commits(table):
    """event_id -> (received_at in s, commit time in s) over the table's live files."""
    dt = DeltaTable(f"s3://lake/{os.environ['PREFIX']}/{table}", storage_options=options)
    out = {}
    for add in pa.table(dt.get_add_actions(flatten=True)).to_pylist():
        t = add["modification_time"]
        t = t.timestamp() if hasattr(t, "timestamp") else t / 1000
        rows = pq.read_table(f"lake/{os.environ['PREFIX']}/{table}/{add['path']}", filesystem=fs,
                             columns=["event_id", "received_at"]).to_pylist()
        for row in rows:
            previous = out.get(row["event_id"])
            if previous is None or t < previous[1]:
                out[row["event_id"]] = (row["received_at"].timestamp(), t)
    return out

raw, derived = commits("raw_events"), commits("contact_events")
pairs = [(raw[e][0], raw[e][1], derived[e][1]) for e in derived if e in raw]
def show(name, lags):
    lags.sort()
    q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
    print(f"{name}, {len(lags)} contact rows: median {statistics.median(lags):.2f} s, "
          f"p90 {q(0.9):.2f} s, p99 {q(0.99):.2f} s, max {lags[-1]:.2f} s")
show("receipt to raw_events commit", [c - r for r, c, _ in pairs])
show("raw_events commit to contact_events commit", [d - c for _, c, d in pairs])
show("receipt to contact_events commit", [d - r for r, _, d in pairs])
EOF
stop_receivers
kill "$deriver"; wait "$deriver" 2>/dev/null || true
}
HOOKLAKE_FLUSH_INTERVAL_SECS="$flush" steady steady "flushing every $flush s"
# The same with the receivers' flushes on the clock (flush_schedule), as README recommends.
HOOKLAKE_FLUSH_INTERVAL_SECS=0 HOOKLAKE_FLUSH_SCHEDULE="*/$flush * * * * *" \
    steady aligned "flushing on the clock every $flush s (flush_schedule)"
