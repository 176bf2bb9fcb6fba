#!/usr/bin/env bash
# Trigger delivery benchmark (issue 24): the delay from a webhook's acknowledgement to the
# delivery of the trigger request its event causes. A release `hooklake serve` with one trigger
# on every status transition (each new contact makes one) and `flush_interval_secs` = INTERVAL
# sends its requests to a target on loopback that records when each arrives; a client posts
# generated deliveries one per request at RATE per second for SECONDS and records when
# each was acknowledged. Prints the delay's median, p90, p99 and maximum, and how many facts
# arrived. Expected: about half the flush interval on average, at most the interval plus the
# flush and the request.
# Usage: scripts/bench-triggers.sh [INTERVAL_SECS] [RATE] [SECONDS] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
interval="${1:-1}"
rate="${2:-100}"
secs="${3:-30}"
work="${4:-$(mktemp -d /var/tmp/hooklake-triggers.XXXXXX)}"
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
echo "== building (release)" >&2
cargo build --release --quiet --bin hooklake
bin="$CARGO_TARGET_DIR/release/hooklake"
target_port=18590
server_port=18591
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$bin" gen --contacts $((rate * secs)) --days 1 --seed 3 --out "$work/events.ndjson"
rm -f "$work/received.txt" "$work/acked.txt"

# The target: appends "<unix seconds> <event_id of the fact's row>" per request.
python3 - "$target_port" "$work/received.txt" <<'EOF' &
import http.server, json, sys, time
port, out = int(sys.argv[1]), open(sys.argv[2], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        out.write(f"{time.time():.6f} {json.loads(body)['data']['event_id']}\n")
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
pids+=($!)

cat > "$work/hooklake.toml" <<EOF
flush_interval_secs = $interval
[[triggers]]
name = "status"
on = "status"
url = "http://127.0.0.1:$target_port/hook"
EOF
rm -rf "$work/data"
"$bin" --config "$work/hooklake.toml" --data-dir "$work/data" serve --listen "127.0.0.1:$server_port" 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$server_port) 2>/dev/null && break; sleep 0.1; done

echo "== posting $rate contact deliveries/s for $secs s (flush interval $interval s)" >&2
python3 - "$server_port" "$work/events.ndjson" "$rate" "$secs" "$work/acked.txt" <<'EOF'
import json, sys, time, urllib.request
port, path, rate, secs, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), open(sys.argv[5], "w")
lines = open(path).readlines()
start = time.time()
for i, line in enumerate(lines[: rate * secs]):
    wait = start + i / rate - time.time()
    if wait > 0:
        time.sleep(wait)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/iclosed", data=line.encode(),
                                 headers={"content-type": "application/json"})
    answer = json.load(urllib.request.urlopen(req))
    acked = time.time()
    for event_id in answer["event_ids"]:
        out.write(f"{acked:.6f} {event_id}\n")
EOF
sleep $((interval * 2 + 3))

python3 - "$work/acked.txt" "$work/received.txt" "$interval" <<'EOF'
import sys
acked = {l.split()[1]: float(l.split()[0]) for l in open(sys.argv[1])}
first = {}
for l in open(sys.argv[2]):
    t, e = l.split()
    first.setdefault(e, float(t))
delays = sorted(first[e] - acked[e] for e in first if e in acked)
q = lambda p: delays[min(len(delays) - 1, int(p * len(delays)))]
print(f"flush interval {sys.argv[3]} s: {len(delays)} facts delivered; delay from acknowledgement "
      f"to delivery: median {q(0.5):.3f} s, p90 {q(0.9):.3f} s, p99 {q(0.99):.3f} s, max {delays[-1]:.3f} s")
EOF
