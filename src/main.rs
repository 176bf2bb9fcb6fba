use std::process::ExitCode;

/// jemalloc instead of the system allocator: a flush allocates and frees millions of small
/// values on several threads, and glibc's malloc and free took 18% of a replay's CPU doing so
/// (docs/benchmarks.md, Batch replay, 2026-11-27).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: the flush threads are made anew for each flush,
/// and with one arena per few threads their freed memory spread over many arenas and stayed
/// there (replay peaked 50 MiB higher). One arena, with each thread's cache in front of it,
/// keeps the peak where it was without slowing down. `MALLOC_CONF`-style overrides still work
/// through the `_RJEM_MALLOC_CONF` environment variable.
/// (A thin pointer to NUL-terminated bytes, as C's `const char *malloc_conf` is.)
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 10] = b"narenas:1\0";

fn main() -> ExitCode {
    // Batch commands start again with the allocator options only a start can set.
    hooklake::memory::restart_for_batch(std::env::args_os().collect());
    match hooklake::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
