#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a while: the body parser, the flattener, the log
# records. Usage: scripts/fuzz.sh [seconds per target, default 20] [target...]
# FUZZ_FLAGS holds extra libFuzzer options (for example -jobs=2), split on spaces.
#
# Needs cargo-fuzz (installed from crates.io if missing) and a C++ compiler (libfuzzer-sys builds
# libFuzzer). There is no nightly toolchain here: RUSTC_BOOTSTRAP=1 lets the stable compiler take
# the -Z flags cargo-fuzz passes (sanitizer, coverage). New interesting inputs go to
# fuzz/corpus/<target> (not committed); a crash is saved in fuzz/artifacts/<target> and fails
# the run. The seeds in fuzz/seeds/<target> are committed; parse_body and flatten also start
# from the sample payloads in examples/payloads.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(parse_body flatten log_record)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi
# Its own target directory: the sanitizer flags would otherwise rebuild the main crate's.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/hooklake/fuzz-target}"
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    seeds=("seeds/$target")
    case "$target" in
        parse_body | flatten) seeds+=(../examples/payloads) ;;
    esac
    echo "== fuzzing $target for ${seconds}s" >&2
    # FUZZ_FLAGS is split into words on purpose.
    # shellcheck disable=SC2086
    cargo fuzz run --release "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 ${FUZZ_FLAGS:-}
done
