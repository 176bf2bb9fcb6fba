//! The deriver's state store in the lake (`_hooklake/deriver/state.redb`): restored when a
//! deriver takes the lease, uploaded every `derive_snapshot_secs` and when it stops.
//! Invariant: an upload replaces only the copy this holding restored or uploaded last (a
//! conditional write), and only while the lease holds; a copy is taken with no transaction
//! running.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use object_store::{PutMode, PutOptions, PutPayload, UpdateVersion};

use crate::lake::{Lake, store_error};
use crate::pipeline::Pipeline;

use super::Lease;

/// Where the deriver's state store is kept in the lake.
pub const STATE_OBJECT: &str = "_hooklake/deriver/state.redb";

/// Replaces the local state store with the lake's copy (none: an empty store, so that rule R
/// reverts every flush a deriver committed without uploading its state). Returns the copy's
/// version, the condition of the next upload.
pub(super) async fn restore_state(
    lake: &Lake,
    data_dir: &Path,
) -> anyhow::Result<Option<UpdateVersion>> {
    let key = lake.path(STATE_OBJECT);
    let state = data_dir.join("_hooklake").join("state.redb");
    let (bytes, version) = match super::get_versioned(lake.store(), &key).await? {
        Some((bytes, version)) => (Some(bytes), Some(version)),
        None => (None, None),
    };
    let tmp = data_dir.join("_hooklake").join(".state.redb.restore");
    match bytes {
        Some(bytes) => {
            std::fs::write(&tmp, &bytes)
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &state))
                .with_context(|| format!("cannot restore {}", state.display()))?;
            tracing::info!(
                bytes = bytes.len(),
                "the deriver's state restored from the lake"
            );
        }
        None => match std::fs::remove_file(&state) {
            Ok(()) => tracing::info!("no deriver state in the lake: starting from none"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", state.display())),
        },
    }
    Ok(version)
}

/// Uploads a copy of the state store, replacing the copy this holding read or wrote last
/// (a conditional write: a deriver that lost its lease cannot replace its successor's).
pub(super) async fn upload_state(
    pipeline: &Arc<Pipeline>,
    lake: &Lake,
    lease: &Lease,
    snapshot_version: &mut Option<UpdateVersion>,
) -> anyhow::Result<()> {
    let copy: PathBuf = pipeline
        .data_dir()
        .join("_hooklake")
        .join(".state.redb.upload");
    let store = pipeline.clone();
    let target = copy.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        store.store().copy_to(&target)?;
        std::fs::read(&target).map_err(|e| anyhow::anyhow!("read {}: {e}", target.display()))
    })
    .await??;
    let _ = std::fs::remove_file(&copy);
    if !lease.fence().holds() {
        anyhow::bail!("the deriver lease may have expired: not uploading the state");
    }
    let key = lake.path(STATE_OBJECT);
    let mode = match snapshot_version.clone() {
        Some(version) => PutMode::Update(version),
        None => PutMode::Create,
    };
    let size = bytes.len();
    let result = lake
        .store()
        .put_opts(
            &key,
            PutPayload::from(bytes),
            PutOptions {
                mode,
                ..PutOptions::default()
            },
        )
        .await
        .map_err(|e| store_error("put state", &key, e))?;
    *snapshot_version = Some(UpdateVersion {
        e_tag: result.e_tag,
        version: result.version,
    });
    tracing::info!(bytes = size, "the deriver's state uploaded to the lake");
    Ok(())
}
