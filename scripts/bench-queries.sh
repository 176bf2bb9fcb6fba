#!/usr/bin/env bash
# Query benchmark (issue 5): every query in queries/ on a lake of about 1 million contact events.
# Generates LEADS leads (default 260 000: about 1.0 million contact events, 1.7 million events in
# all) spread over DAYS days (default 365), replays them into a lake, compacts it (one file per
# partition, the steady state the background compactor keeps), then runs each query RUNS times
# (default 5) through `hooklake query --format csv` (DuckDB CLI start-up included) and prints
# the median and the slowest wall time per query. Target: every query under 1 second.
# Usage: scripts/bench-queries.sh [LEADS] [DAYS] [RUNS] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
leads="${1:-260000}"
days="${2:-365}"
runs="${3:-5}"
work="${4:-$(mktemp -d /var/tmp/hooklake-queries.XXXXXX)}"
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v duckdb >/dev/null || { echo "the duckdb CLI is needed: pip install duckdb-cli" >&2; exit 1; }
echo "== building (release)" >&2
cargo build --release --quiet --bin hooklake
bin="$CARGO_TARGET_DIR/release/hooklake"
lake="$work/lake"
# A lake is reused only if a run with the same parameters finished building it (a run killed
# half-way, or one with other parameters, leaves no matching marker).
marker="$work/lake.built"
if [ "$(cat "$marker" 2>/dev/null)" != "$leads $days 1" ]; then
    rm -rf "$lake" "$marker"
    echo "== generating $leads leads over $days days" >&2
    "$bin" gen --contacts "$leads" --days "$days" --seed 1 --out "$work/events.ndjson"
    echo "== replaying into $lake" >&2
    HOOKLAKE_LOG=warn "$bin" --data-dir "$lake" replay "$work/events.ndjson" > "$work/replay.out"
    echo "== compacting" >&2
    HOOKLAKE_LOG=warn "$bin" --data-dir "$lake" compact --before 2100-01-01 > "$work/compact.out"
    echo "$leads $days 1" > "$marker"
fi
contact_events=$(duckdb -noheader -list -c "SELECT count(*) FROM read_parquet('$lake/contact_events/date=*/*.parquet')")
files=$(find "$lake" -name '*.parquet' | wc -l)
echo "lake: $contact_events contact events, $files Parquet files, $(du -sh "$lake" | cut -f1)"
echo
echo "| query | median s | max s | rows |"
echo "|---|---|---|---|"
for name in $("$bin" query --list | cut -d' ' -f1); do
    times=()
    for _ in $(seq "$runs"); do
        start=$(date +%s.%N)
        "$bin" query "$name" --data "$lake" --format csv > "$work/$name.csv"
        end=$(date +%s.%N)
        times+=("$(awk "BEGIN { print $end - $start }")")
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    if (( runs % 2 )); then
        median=$(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p")
    else
        median=$(echo "$sorted" | sed -n "$(( runs / 2 )),$(( runs / 2 + 1 ))p" | awk '{ s += $1 } END { print s / 2 }')
    fi
    max=$(echo "$sorted" | tail -1)
    rows=$(( $(wc -l < "$work/$name.csv") - 1 ))
    printf '| %s | %.3f | %.3f | %d |\n' "$name" "$median" "$max" "$rows"
done
