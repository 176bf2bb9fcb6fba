#!/usr/bin/env bash
# Batch throughput benchmark (issue 7): on one generated NDJSON data set (default 230 000 leads,
# about 1 million events), measures in one run
#   1. `hooklake replay` into every table (events/s, MB/s, peak RSS),
#   2. DuckDB doing the equivalent flattening of contact events (read_json of the same file into
#      a date-partitioned contact_events-like table with the UTM columns, COPY ... PARTITION_BY),
#   3. the parse-only floor (serde_json parses every line and discards it),
# then compacts the lake and compares output bytes per event and files per partition with
# DuckDB's own Parquet output of the same contact rows.
# Usage: scripts/bench-batch.sh [LEADS] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
leads="${1:-230000}"
work="${2:-$(mktemp -d /var/tmp/hooklake-batch.XXXXXX)}"
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v duckdb >/dev/null || { echo "the duckdb CLI is needed: pip install duckdb-cli" >&2; exit 1; }
echo "== building (release)" >&2
cargo build --release --quiet --bin hooklake --example parse_floor
bin="$CARGO_TARGET_DIR/release/hooklake"
input="$work/events.ndjson"
# The data set is reused only if it was generated whole with the same number of leads.
if [ "$(cat "$input.leads" 2>/dev/null)" != "$leads" ] || [ ! -s "$input" ]; then
    rm -f "$input.leads"
    "$bin" gen --contacts "$leads" --seed 1 --out "$input"
    echo "$leads" > "$input.leads"
fi
events=$(wc -l < "$input"); bytes=$(stat -c %s "$input")
echo "== input: $events events, $bytes bytes" >&2

timed() { # label command...: runs it, prints seconds and peak RSS (KiB) as "secs rss"
    local label=$1; shift
    /usr/bin/time -f "%e %M" -o "$work/$label.time" "$@" > "$work/$label.out" 2> "$work/$label.err" || { cat "$work/$label.err" >&2; exit 1; }
    cat "$work/$label.time"
}

# The outputs of an earlier run are deleted first, written out, and left behind for a few
# seconds: ext4 skips inodes freed in the last 5 s when it allocates new ones (up to 5 min while
# their inode table block is still dirty), so a replay started right after deleting the previous
# run's thousands of files spent up to 3 s more system time searching for free inodes.
rm -rf "$work/lake" "$work/duck"
sync
sleep 6

echo "== parse-only floor" >&2
floor=$(timed floor "$CARGO_TARGET_DIR/release/examples/parse_floor" "$input")

echo "== hooklake replay" >&2
replay=$(HOOKLAKE_LOG=warn timed replay "$bin" --data-dir "$work/lake" replay "$input")

echo "== duckdb flattening of contact events" >&2
cat > "$work/duck.sql" <<SQL
SET preserve_insertion_order = false;
COPY (
    SELECT id AS contact_id, accountId AS account_id, userId AS user_id, previewId AS preview_id,
           firstName AS first_name, lastName AS last_name, email, phoneNumber AS phone_number, status,
           createdAt::TIMESTAMPTZ AS created_at, updatedAt::TIMESTAMPTZ AS updated_at,
           tracking->>'utm_source' AS utm_source, tracking->>'utm_medium' AS utm_medium,
           tracking->>'utm_campaign' AS utm_campaign, tracking->>'utm_term' AS utm_term,
           tracking->>'utm_content' AS utm_content, tracking->>'first_utm_source' AS first_utm_source,
           tracking->>'first_utm_medium' AS first_utm_medium, tracking->>'first_utm_campaign' AS first_utm_campaign,
           tracking->>'first_utm_term' AS first_utm_term, tracking->>'first_utm_content' AS first_utm_content,
           updatedAttributes AS updated_attributes, hookType AS hook_type,
           coalesce(updatedAt::TIMESTAMPTZ, createdAt::TIMESTAMPTZ) AS event_time,
           strftime(coalesce(updatedAt::TIMESTAMPTZ, createdAt::TIMESTAMPTZ), '%Y-%m-%d') AS date
    FROM read_json('$input', format = 'newline_delimited', columns = {
        id: 'BIGINT', accountId: 'BIGINT', userId: 'BIGINT', previewId: 'VARCHAR', firstName: 'VARCHAR',
        lastName: 'VARCHAR', email: 'VARCHAR', phoneNumber: 'VARCHAR', status: 'VARCHAR',
        createdAt: 'VARCHAR', updatedAt: 'VARCHAR', tracking: 'JSON', updatedAttributes: 'VARCHAR[]',
        hookType: 'VARCHAR'})
    WHERE hookType LIKE 'Contact%'
) TO '$work/duck' (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd);
SQL
duck=$(timed duck duckdb -c ".read $work/duck.sql")

echo "== compaction" >&2
# Replaced files are deleted at once (no retention), so the sizes below are the compacted lake's.
HOOKLAKE_LOG=warn HOOKLAKE_VACUUM_RETENTION_SECS=0 "$bin" --data-dir "$work/lake" compact --before 2100-01-01 > "$work/compact.out"

python3 - "$work" "$events" "$bytes" "$floor" "$replay" "$duck" <<'PY'
import json, os, sys
work, events, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
(fs, fr), (rs, rr), (ds, dr) = [tuple(float(x) for x in a.split()) for a in sys.argv[4:7]]
def tree(d):
    # Data files only: Delta checkpoints under _delta_log/ are Parquet files too.
    files = [os.path.join(r, f) for r, _, fs_ in os.walk(d) for f in fs_
             if f.endswith(".parquet") and "_delta_log" not in r]
    return files, sum(os.path.getsize(f) for f in files)
contacts = sum(1 for l in open(os.path.join(work, "events.ndjson")) if '"Contact ' in l)
lake_files, lake_bytes = tree(os.path.join(work, "lake"))
ce_files, ce_bytes = tree(os.path.join(work, "lake", "contact_events"))
duck_files, duck_bytes = tree(os.path.join(work, "duck"))
parts = lambda d: len([p for p in os.listdir(d) if p.startswith("date=")])
tables = [t for t in os.listdir(os.path.join(work, "lake")) if not t.startswith("_")]
print(f"input: {events} events ({contacts} contact events), {size/1e6:.1f} MB\n")
print("| step | seconds | events/s | MB/s | peak RSS MiB |\n|---|---|---|---|---|")
print(f"| parse-only floor (serde_json) | {fs:.2f} | {events/fs:.0f} | {size/1e6/fs:.1f} | {fr/1024:.0f} |")
print(f"| hooklake replay (all tables) | {rs:.2f} | {events/rs:.0f} | {size/1e6/rs:.1f} | {rr/1024:.0f} |")
print(f"| DuckDB, contact_events only | {ds:.2f} | {events/ds:.0f} | {size/1e6/ds:.1f} | {dr/1024:.0f} |")
print(f"\nreplay vs DuckDB: {ds/rs:.2f}x faster (target >= 2x); replay vs parse floor: {rs/fs:.2f}x (target <= 3x); peak RSS {rr/1024:.0f} MiB (target < 300)")
print(f"after compaction: hooklake {len(lake_files)} files, {lake_bytes/events:.0f} bytes/event for its {len(tables)} tables; "
      f"contact_events {len(ce_files)} files in {parts(os.path.join(work, 'lake', 'contact_events'))} partitions, {ce_bytes/contacts:.0f} bytes/contact event")
print(f"DuckDB contact_events: {len(duck_files)} files in {parts(os.path.join(work, 'duck'))} partitions, {duck_bytes/contacts:.0f} bytes/contact event")
PY
