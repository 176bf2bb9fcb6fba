//! The deriver's lease: one object in the lake (`_hooklake/deriver.lease`), created only if
//! absent and replaced only if unchanged since it was read (conditional writes), so that at
//! most one deriver holds it. The holder renews it every third of its duration; a standby
//! takes it over once it has seen the same version of the object for a whole duration on its
//! own clock. The holder counts its lease from the start of its last successful write and
//! stops committing a sixth of the duration before it could be taken over ([`Fence`]).
//! Invariant: a deriver commits only while [`Fence::holds`]; two holders never overlap in
//! time unless a process stalls between its check and its commit, which the shared Delta
//! transaction id then refuses.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::lake::{Lake, LakeError, store_error};

/// Where the lease lives, inside the lake.
pub const LEASE_OBJECT: &str = "_hooklake/deriver.lease";

/// The lease object's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseBody {
    /// The holder's instance id (its data directory's).
    pub holder: String,
    /// The holder's host name, for `status`.
    pub host: String,
    /// When the holder last wrote it, milliseconds since the epoch (for people: takeover
    /// counts on the standby's own clock).
    pub renewed_at_ms: i64,
    /// How long it lasts unrenewed.
    pub duration_secs: u64,
    /// Set by a holder that stopped cleanly: a standby takes it at once.
    pub released: bool,
}

/// Whether a deriver may commit: until its lease may have been taken over.
#[derive(Debug, Default)]
pub struct Fence {
    valid_until: Mutex<Option<Instant>>,
}

impl Fence {
    /// Whether the lease is still this deriver's.
    pub fn holds(&self) -> bool {
        self.valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    fn extend(&self, until: Option<Instant>) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }
}

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the deriver lease was taken over by another deriver")]
    Lost,
    #[error(transparent)]
    Lake(#[from] LakeError),
}

/// One deriver's side of the lease.
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    holder: String,
    duration: Duration,
    /// The version of the object this deriver last wrote (while it holds the lease).
    version: Option<UpdateVersion>,
    /// The version a standby has been watching, and since when.
    watching: Option<(Option<String>, Instant)>,
    fence: Arc<Fence>,
}

impl Lease {
    pub fn new(lake: &Lake, holder: &str, duration: Duration) -> Lease {
        Lease {
            store: lake.store().clone(),
            path: lake.path(LEASE_OBJECT),
            holder: holder.to_string(),
            duration,
            version: None,
            watching: None,
            fence: Arc::new(Fence::default()),
        }
    }

    /// The fence commits wait on.
    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// How long the holder may commit after the start of a successful write.
    fn validity(&self) -> Duration {
        self.duration - self.duration / 6
    }

    /// Reads the lease object: its body and version, or `None` if there is none.
    pub async fn read(
        store: &Arc<dyn ObjectStore>,
        path: &ObjectPath,
    ) -> Result<Option<(LeaseBody, UpdateVersion)>, LakeError> {
        let Some((bytes, version)) = super::get_versioned(store, path).await? else {
            return Ok(None);
        };
        let body = serde_json::from_slice(&bytes).map_err(|e| LakeError::Log {
            table: LEASE_OBJECT.into(),
            reason: format!("unreadable lease: {e}"),
        })?;
        Ok(Some((body, version)))
    }

    fn body(&self, released: bool) -> LeaseBody {
        LeaseBody {
            holder: self.holder.clone(),
            host: crate::derive::host_name(),
            renewed_at_ms: chrono::Utc::now().timestamp_millis(),
            duration_secs: self.duration.as_secs(),
            released,
        }
    }

    /// Writes the lease with `mode`; `Ok(false)` when the condition failed (another
    /// deriver wrote first). On success the fence extends from the write's start.
    async fn write(&mut self, mode: PutMode, released: bool) -> Result<bool, LakeError> {
        let started = Instant::now();
        let body = serde_json::to_vec(&self.body(released)).expect("a lease serializes");
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path, PutPayload::from(body), options)
            .await
        {
            Ok(result) => {
                self.version = Some(UpdateVersion {
                    e_tag: result.e_tag,
                    version: result.version,
                });
                let until = (!released).then(|| started + self.validity());
                self.fence.extend(until);
                Ok(true)
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(store_error("put lease", &self.path, e)),
        }
    }

    /// Tries to take the lease once: free (absent or released), ours from before a restart,
    /// or unchanged for a whole duration since this standby first saw it. Returns whether
    /// this deriver holds it now.
    pub async fn try_take(&mut self) -> Result<bool, LakeError> {
        match Lease::read(&self.store, &self.path).await? {
            None => self.write(PutMode::Create, false).await,
            Some((body, version)) => {
                let free = body.released || body.holder == self.holder;
                let expired = match &self.watching {
                    Some((tag, since)) if *tag == version.e_tag => since.elapsed() >= self.duration,
                    _ => {
                        self.watching = Some((version.e_tag.clone(), Instant::now()));
                        false
                    }
                };
                if !(free || expired) {
                    return Ok(false);
                }
                if expired && !free {
                    tracing::warn!(
                        previous = %body.holder,
                        host = %body.host,
                        "the deriver lease expired: taking it over"
                    );
                }
                let taken = self.write(PutMode::Update(version), false).await?;
                if taken {
                    self.watching = None;
                }
                Ok(taken)
            }
        }
    }

    /// Renews the lease this deriver holds.
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        let Some(version) = self.version.clone() else {
            return Err(LeaseError::Lost);
        };
        match self.write(PutMode::Update(version), false).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.fence.extend(None);
                self.version = None;
                Err(LeaseError::Lost)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up (a clean stop): a standby takes it at its next look.
    pub async fn release(&mut self) -> Result<(), LakeError> {
        self.fence.extend(None);
        if let Some(version) = self.version.take() {
            self.write(PutMode::Update(version), true).await?;
            self.fence.extend(None);
        }
        Ok(())
    }

    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}
