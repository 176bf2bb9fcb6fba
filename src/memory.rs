//! How the allocator gets memory from the operating system and hands it back, for batch
//! commands (`replay`, `rebuild`).
//!
//! jemalloc returns freed pages to the kernel over time ("decay"), and pages of allocations of
//! 8 MiB or more at once. A batch job frees and allocates about the same memory at every flush
//! (each flush's rows, columns and buffers), so the pages it returns are asked for again a few
//! milliseconds later, each one faulted in and zeroed by the kernel anew: a replay spent 11% of
//! its CPU in the kernel, and keeping the pages halved that ([`keep_freed_pages`]). And a
//! flush's rows (a kilobyte each for contacts) are read column by column, from many pages at
//! once: in huge pages ([`BATCH_OPTIONS`]), fewer misses in the processor's address
//! translation. That option is read only when jemalloc starts, so a batch command starts the
//! program again with it ([`restart_for_batch`]).
//!
//! Invariant: only batch commands keep their freed pages and use huge pages; a server returns
//! memory after a burst, and its page faults never wait for the kernel to assemble a huge page.

/// The environment variable jemalloc reads its options from (with tikv-jemallocator's prefix).
pub const ALLOCATOR_OPTIONS: &str = "_RJEM_MALLOC_CONF";

/// The options a batch command starts with, which jemalloc reads only when it starts: its memory
/// in huge pages (2 MiB, where the kernel allows them), so that the processor's address
/// translation covers a flush's rows with a few entries instead of thousands. Replays took 1-6%
/// less time (seven comparisons, a median of 3.5%), and peaked 9-25 MiB higher
/// (docs/benchmarks.md, Batch replay, 2026-11-27).
pub const BATCH_OPTIONS: &str = "thp:always";

/// For a batch command (`args` are the program's), runs the program again with
/// [`BATCH_OPTIONS`] unless the allocator's options are set already (by this, or by the user,
/// whose options win). Returns only if it did not run it again: not a batch command, options
/// set, or the program could not be run (then it goes on as it is).
pub fn restart_for_batch(args: Vec<std::ffi::OsString>) {
    #[cfg(all(feature = "jemalloc", unix))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os(ALLOCATOR_OPTIONS).is_some()
            || !crate::cli::is_batch_command(args.iter().cloned())
        {
            return;
        }
        let Ok(program) = std::env::current_exe() else {
            return;
        };
        let mut command = std::process::Command::new(program);
        if let Some(name) = args.first() {
            command.arg0(name);
        }
        // `exec` returns only when it failed.
        let _ = command
            .args(&args[1..])
            .env(ALLOCATOR_OPTIONS, BATCH_OPTIONS)
            .exec();
    }
    #[cfg(not(all(feature = "jemalloc", unix)))]
    let _ = args;
}

/// Whether the allocator puts its memory in huge pages (`thp:always`), for the logs.
pub fn huge_pages() -> bool {
    #[cfg(feature = "jemalloc")]
    {
        // SAFETY: `opt.thp` is a `const char *` setting, read as one, its name NUL-terminated.
        let thp: Result<&'static [u8], _> =
            unsafe { tikv_jemalloc_ctl::raw::read_str(b"opt.thp\0") };
        // The bytes read end with the string's NUL.
        thp.is_ok_and(|v| v == b"always\0")
    }
    #[cfg(not(feature = "jemalloc"))]
    false
}

/// Keeps the pages the process frees for its own reuse instead of returning them to the kernel.
/// Memory then stays at its peak until the process exits, which a batch command's peak bounds.
/// Does nothing when jemalloc is not the allocator, or if the allocator refuses.
pub fn keep_freed_pages() {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::raw;
        const NEVER: isize = -1;
        // SAFETY: these names are jemalloc's `ssize_t` and `unsigned` settings, written and read
        // with types of those sizes, and NUL-terminated.
        unsafe {
            // The default for arenas made from now on, the one for large allocations included
            // (which otherwise returns its pages at once whenever the default is positive).
            let _ = raw::write(b"arenas.dirty_decay_ms\0", NEVER);
            let arenas: u32 = raw::read(b"arenas.narenas\0").unwrap_or(1);
            // The arenas made already (one, by `narenas:1` in src/main.rs, and the one for large
            // allocations if a large allocation made it): an index not in use is refused.
            for i in 0..=arenas {
                let _ = raw::write(format!("arena.{i}.dirty_decay_ms\0").as_bytes(), NEVER);
            }
        }
    }
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use tikv_jemalloc_ctl::raw;

    fn decay(name: &[u8]) -> isize {
        // SAFETY: an `ssize_t` setting read as an `isize`, its name NUL-terminated.
        unsafe { raw::read(name).expect("jemalloc knows the setting") }
    }

    #[test]
    fn freed_pages_are_kept_by_the_arenas_made_and_those_to_come() {
        assert!(
            decay(b"arena.0.dirty_decay_ms\0") > 0,
            "jemalloc's default decays"
        );
        super::keep_freed_pages();
        assert_eq!(decay(b"arena.0.dirty_decay_ms\0"), -1);
        assert_eq!(decay(b"arenas.dirty_decay_ms\0"), -1);
    }
}
