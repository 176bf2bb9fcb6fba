#!/usr/bin/env bash
# Checks that the repository stands on its own: no file may refer to a path outside it, so a
# plain clone builds, tests and runs. Two kinds of reference are refused, each reported as
# file:line:
#   - a relative path whose `../` steps climb above the repository's root, read from the file's
#     own directory or from the root (where the README's commands and the scripts run); a path
#     that stays inside when read from the file's directory and names an existing file or
#     directory there is fine (`include_str!("../queries/views.sql")` in src/);
#   - any mention of the shared fixtures directory, which sits beside the repository on some
#     machines and is never in a clone.
# Usage: scripts/check-self-contained.sh [DIR]   (DIR defaults to this repository)
# In a git work tree it reads the tracked files; elsewhere every file outside .git/ and target/.
# Exit status: 0 when nothing refers outside, 1 when something does (or DIR is not a directory).
set -euo pipefail
root="$(cd "${1:-$(dirname "$0")/..}" && pwd -P)"
cd "$root"

if [ "$(git rev-parse --show-toplevel 2>/dev/null || true)" = "$root" ]; then
    list_files() { git ls-files -z; }
else
    list_files() {
        find . \( -path ./.git -o -path ./target \) -prune -o -type f -print0 | sed -z 's|^\./||'
    }
fi

# Text files only: grep -I skips binary ones.
findings="$(
    list_files | xargs -0 -r grep -IlZ -e '' -- 2>/dev/null | xargs -0 -r awk '
    # The name is assembled so that this script does not mention it itself.
    BEGIN {
        shared = "shared" "/" "fixtures"
        # A path: characters that may make up file names, with a `../` step somewhere.
        path = "[-A-Za-z0-9_.~$/+]*[.][.]/[-A-Za-z0-9_.~$/+]*"
    }
    FNR == 1 {
        dir = FILENAME
        if (!sub(/\/[^\/]*$/, "", dir)) dir = ""
        depth = (dir == "") ? 0 : split(dir, ignored, "/")
    }
    # Resolves `token` from a directory `from` levels below the root; returns the path it
    # names, or "" when it climbs above the root.
    function resolve(token, from, prefix,    n, parts, i, d, stack, out) {
        n = split(token, parts, "/")
        d = from
        split(prefix, stack, "/")
        for (i = 1; i <= n; i++) {
            if (parts[i] == "" || parts[i] == ".") continue
            if (parts[i] == "..") {
                d--
                if (d < 0) return ""
            } else {
                d++
                stack[d] = parts[i]
            }
        }
        out = "."
        for (i = 1; i <= d; i++) out = out "/" stack[i]
        return out
    }
    function exists(path) {
        return system("test -e \"" path "\"") == 0
    }
    {
        if (index($0, shared)) {
            printf "%s:%d: names the shared fixtures directory, which is not in the repository\n", FILENAME, FNR
        }
        rest = $0
        while (match(rest, path)) {
            token = substr(rest, RSTART, RLENGTH)
            rest = substr(rest, RSTART + RLENGTH)
            # A component holding a variable (such as $ROOT) is an unknown base: what follows it is
            # read as a relative path.
            while (match(token, /^[^\/]*\$[^\/]*\//)) token = substr(token, RLENGTH + 1)
            here = resolve(token, depth, dir)
            if (here != "" && exists(here)) continue
            if (here == "" || resolve(token, 0, "") == "") {
                printf "%s:%d: %s climbs above the repository root\n", FILENAME, FNR, token
            }
        }
    }'
)"

if [ -n "$findings" ]; then
    printf '%s\n' "$findings"
    echo "== $(printf '%s\n' "$findings" | wc -l) reference(s) to paths outside $root" >&2
    exit 1
fi
echo "== nothing in $root refers to a path outside it" >&2
