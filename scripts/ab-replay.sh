#!/usr/bin/env bash
# Compares hooklake binaries on one replay input, side by side: runs them in turn, N rounds
# (alternating, so that a slow spell of the machine hits every binary alike), and prints for
# each the medians of wall time, user CPU, peak RSS and the flush stages summed over a run, and
# each binary's wall time less the first one's, round by round.
# How the batch-throughput changes in docs/benchmarks.md were measured.
#
# Usage: scripts/ab-replay.sh ROUNDS INPUT BINARY... (env VAR=value before BINARY is not
# supported: wrap such a run in a small script that execs the binary)
# Example: scripts/ab-replay.sh 3 /var/tmp/hb/events.ndjson old/hooklake target/release/hooklake
# Each run's figures stay in /tmp/ab-last-results.jsonl (one JSON object a line) after it ends.
# AB_DIR=/dev/shm puts the lakes in memory: deleting one lake's thousands of files on ext4 makes
# the next run's file creations scan for recently deleted inodes, which varied a run's system
# time from 2 to 5 s; on tmpfs the comparison measures CPU work only.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
rounds=$1; input=$2; shift 2
[ -r "$input" ] || { echo "cannot read $input" >&2; exit 1; }
work=$(mktemp -d "${AB_DIR:-/var/tmp}/hooklake-ab.XXXXXX")
trap 'cp "$work/results" /tmp/ab-last-results.jsonl 2>/dev/null; rm -rf "$work"' EXIT
results="$work/results"
: > "$results"
for round in $(seq "$rounds"); do
    for bin in "$@"; do
        echo "== round $round/$rounds: $bin" >&2
        rm -rf "$work/lake"
        HOOKLAKE_LOG=info /usr/bin/time -f "TIME %e %U %S %M" -o "$work/time" \
            "$bin" --data-dir "$work/lake" replay "$input" > /dev/null 2> "$work/log" \
            || { tail -5 "$work/log" >&2; exit 1; }
        python3 - "$bin" "$work/time" "$work/log" >> "$results" <<'PY'
import json, re, sys
bin_, time_file, log_file = sys.argv[1:4]
wall, user, system, rss_kib = open(time_file).read().split()[1:5]
run = {"wall_s": float(wall), "user_s": float(user), "sys_s": float(system),
       "rss_mib": int(rss_kib) // 1024}
for line in open(log_file):
    for stage in ("flatten", "load_state", "track", "score", "write", "commit"):
        m = re.search(rf"\b{stage}_ms=(\d+)", line)
        if m:
            run[stage + "_s"] = run.get(stage + "_s", 0) + int(m.group(1)) / 1000
print(json.dumps({"bin": bin_, **run}))
PY
    done
done
python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
order = list(dict.fromkeys(r["bin"] for r in runs))
keys = ["wall_s", "user_s", "sys_s", "rss_mib", "flatten_s", "load_state_s", "track_s", "score_s", "write_s", "commit_s"]
print("| binary | runs | " + " | ".join(keys) + " |")
print("|---" * (len(keys) + 2) + "|")
for b in order:
    mine = [r for r in runs if r["bin"] == b]
    # A stage an older build does not log is n/a, not zero.
    cells = []
    for k in keys:
        values = [r[k] for r in mine if k in r]
        cells.append(f"{statistics.median(values):.2f}" if len(values) == len(mine) else "n/a")
    print(f"| {b} | {len(mine)} | " + " | ".join(cells) + " |")
# The machine's speed drifts between rounds, often by more than two builds differ; a binary's
# wall time less the first binary's in the same round cancels what the round shares.
first = [r["wall_s"] for r in runs if r["bin"] == order[0]]
for b in order[1:]:
    diffs = [r["wall_s"] - f for r, f in zip([r for r in runs if r["bin"] == b], first)]
    print(f"{b}: wall minus {order[0]}'s, round by round: "
          + ", ".join(f"{d:+.2f}" for d in diffs)
          + f" s (median {statistics.median(diffs):+.2f} s, "
          + f"{100 * statistics.median(diffs) / statistics.median(first):+.1f}%)")
PY
