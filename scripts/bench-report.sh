#!/usr/bin/env bash
# Report benchmark (issue 22): `hooklake report` on the query benchmark's lake of about 1 million
# contact events (built by scripts/bench-queries.sh's steps; a work directory where that script
# built its lake is reused as is). Renders the report RUNS times (default 5) for each period and
# prints the median and slowest wall time, from process start to the HTML file written. Target:
# under 3 seconds. PROFILE=dev times a debug build instead of the release one (an upper bound:
# the time is mostly DuckDB's). The generated events go straight into the replay (no events
# file), so the work directory needs only the lake's room (about 1 GB; /dev/shm will do).
# Usage: [PROFILE=dev] scripts/bench-report.sh [LEADS] [DAYS] [RUNS] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
leads="${1:-260000}"
days="${2:-365}"
runs="${3:-5}"
work="${4:-$(mktemp -d /var/tmp/hooklake-queries.XXXXXX)}"
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v duckdb >/dev/null || { echo "the duckdb CLI is needed: pip install duckdb-cli" >&2; exit 1; }
profile="${PROFILE:-release}"
echo "== building ($profile)" >&2
cargo build --profile "$profile" --quiet --bin hooklake
bin="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")/hooklake"
lake="$work/lake"
# The same lake, and the same marker, as scripts/bench-queries.sh.
marker="$work/lake.built"
if [ "$(cat "$marker" 2>/dev/null)" != "$leads $days 1" ]; then
    rm -rf "$lake" "$marker"
    echo "== generating $leads leads over $days days, replaying them into $lake" >&2
    "$bin" gen --contacts "$leads" --days "$days" --seed 1 \
        | HOOKLAKE_LOG=warn "$bin" --data-dir "$lake" replay - > "$work/replay.out"
    echo "== compacting" >&2
    HOOKLAKE_LOG=warn "$bin" --data-dir "$lake" compact --before 2100-01-01 > "$work/compact.out"
    echo "$leads $days 1" > "$marker"
fi
contact_events=$(duckdb -noheader -list -c "SELECT count(*) FROM read_parquet('$lake/contact_events/*/*.parquet')")
echo "lake: $contact_events contact events, $(find "$lake" -name '*.parquet' | wc -l) Parquet files"
echo
echo "| period | median s | max s | page KiB |"
echo "|---|---|---|---|"
last=$(date -u -d "2026-03-01 + $((days - 1)) days" +%F)
for period in "2026-06-01 2026-06-30" "2026-03-01 $last"; do
    set -- $period
    times=()
    for _ in $(seq "$runs"); do
        start=$(date +%s.%N)
        "$bin" report --data "$lake" --from "$1" --to "$2" --out "$work/report.html" 2>/dev/null
        end=$(date +%s.%N)
        times+=("$(awk "BEGIN { print $end - $start }")")
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    median=$(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p")
    max=$(echo "$sorted" | tail -1)
    printf '| %s to %s | %.3f | %.3f | %d |\n' "$1" "$2" "$median" "$max" "$(( $(stat -c %s "$work/report.html") / 1024 ))"
done
