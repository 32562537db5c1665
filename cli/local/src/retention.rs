//! Retention in `nightcap local`: a finished capture is deleted `ttlSecondsAfterFinished` after
//! it finished, with its files (as the gateway's retention loop deletes them in a cluster); a
//! capture deleted through the API without `keepFiles` has its files deleted once it is gone.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use jiff::Timestamp;
use kube::ResourceExt;
use nightcap_storage::{RetentionItem, Store, sweep};
use tracing::{info, warn};

use crate::state::State;

/// Annotation on a capture being deleted whose files go with it.
pub const DELETE_FILES: &str = "nightcap.dev/delete-files";

/// Every `interval`: deletes expired captures and the files of queued deletions.
pub(crate) async fn retention_loop(state: Arc<State>, store: Store, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        expire(&state);
        delete_queued(&state, &store).await;
    }
}

/// Marks captures past their `ttlSecondsAfterFinished` for deletion with their files.
fn expire(state: &State) {
    let captures = match state.captures(None) {
        Ok(c) => c,
        Err(error) => {
            warn!(%error, "Retention: cannot read the captures.");
            return;
        }
    };
    let now = Utc::now();
    for pc in captures {
        let due = RetentionItem::from_capture(&pc)
            .and_then(|i| i.expires_at())
            .is_some_and(|at| at <= now);
        if !due || pc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = pc.namespace().unwrap_or_default();
        info!(capture = %format!("{ns}/{}", pc.name_any()), "Retention: the capture expired; deleting it with its files.");
        let res = state.request_delete(&ns, &pc.name_any(), true, Timestamp::now());
        if let Err(error) = res {
            warn!(%error, "Retention: cannot delete an expired capture.");
        }
    }
}

async fn delete_queued(state: &State, store: &Store) {
    let queued = match state.file_deletions() {
        Ok(q) => q,
        Err(error) => {
            warn!(%error, "Retention: cannot read the queued deletions.");
            return;
        }
    };
    for (namespace, name, uid) in queued {
        let item = RetentionItem {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: uid.clone(),
            finished_at: Some(DateTime::<Utc>::UNIX_EPOCH),
            ttl_seconds: Some(0),
        };
        match sweep(store.store.clone(), &store.prefix, &[item], Utc::now()).await {
            Ok(r) => {
                info!(capture = %format!("{namespace}/{name}"), files = r.deleted.len(), "Deleted the files of a deleted capture.");
                if let Err(error) = state.file_deletion_done(&namespace, &name, &uid) {
                    warn!(%error, "Retention: cannot record a finished deletion.");
                }
            }
            Err(error) => warn!(%error, "Retention: deleting files failed; retrying next round."),
        }
    }
}
