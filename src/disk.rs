//! Free-space guard: refuses new events before the data directory's file system fills up.
//!
//! Invariant: `statvfs` runs at most once per [`CHECK_EVERY`]; between checks the last answer
//! is reused, so the guard costs a mutex and a clock read per request.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a free-space reading is trusted.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The disk is too full to take more events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("disk nearly full: {free_bytes} bytes free, min_free_bytes is {min_free_bytes}")]
pub struct DiskFull {
    pub free_bytes: u64,
    pub min_free_bytes: u64,
}

pub struct DiskGuard {
    path: PathBuf,
    min_free_bytes: u64,
    /// When free space was last read, and what it was.
    last: Mutex<Option<(Instant, u64)>>,
}

impl DiskGuard {
    pub fn new(path: &Path, min_free_bytes: u64) -> DiskGuard {
        DiskGuard {
            path: path.to_path_buf(),
            min_free_bytes,
            last: Mutex::new(None),
        }
    }

    /// `Ok` when the file system has at least `min_free_bytes` free (or cannot be measured).
    pub fn check(&self) -> Result<(), DiskFull> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let free = match *last {
            Some((at, free)) if at.elapsed() < CHECK_EVERY => free,
            _ => match free_bytes(&self.path) {
                Ok(free) => {
                    *last = Some((Instant::now(), free));
                    free
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot measure free disk space; not enforcing min_free_bytes");
                    return Ok(());
                }
            },
        };
        if free < self.min_free_bytes {
            return Err(DiskFull {
                free_bytes: free,
                min_free_bytes: self.min_free_bytes,
            });
        }
        Ok(())
    }
}

/// Bytes available to an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs writes into the zeroed struct we own and reads the NUL-terminated path.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_when_below_the_minimum() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        assert_eq!(DiskGuard::new(dir.path(), 1).check(), Ok(()));
        let err = DiskGuard::new(dir.path(), u64::MAX).check().unwrap_err();
        assert_eq!(err.min_free_bytes, u64::MAX);
        assert!(err.to_string().contains("disk nearly full"));
        assert_eq!(DiskGuard::new(dir.path(), 0).check(), Ok(()));
    }
}
