//! How the allocator hands memory back to the operating system.
//!
//! jemalloc returns freed pages to the kernel over time ("decay"), and pages of allocations of
//! 8 MiB or more at once. A batch job frees and allocates about the same memory at every flush
//! (each flush's rows, columns and buffers), so the pages it returns are asked for again a few
//! milliseconds later, each one faulted in and zeroed by the kernel anew: a replay spent 11% of
//! its CPU in the kernel, and keeping the pages halved that. Invariant: only batch commands
//! keep their freed pages; a server still returns memory after a burst.

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
