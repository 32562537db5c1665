//! The retention loop: every interval, the expired captures' files are swept from the store.

use std::time::Duration;

use kube::{Api, api::ListParams};
use nightcap_api::PacketCapture;
use nightcap_storage::{RetentionItem, Store, sweep};
use tracing::{info, warn};

/// Every `interval`, deletes the files of finished captures past their
/// `ttlSecondsAfterFinished` (all namespaces; needs `list` on `packetcaptures`).
pub async fn retention_loop(client: kube::Client, store: Store, interval: Duration) {
    let api: Api<PacketCapture> = Api::all(client);
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(error) => {
                warn!(%error, "Retention: listing PacketCaptures failed; retrying next round.");
                continue;
            }
        };
        let items: Vec<RetentionItem> = list
            .items
            .iter()
            .filter_map(RetentionItem::from_capture)
            .collect();
        match sweep(
            store.store.clone(),
            &store.prefix,
            &items,
            chrono::Utc::now(),
        )
        .await
        {
            Ok(r) if !r.deleted.is_empty() => {
                info!(
                    captures = r.expired_captures,
                    files = r.deleted.len(),
                    "Retention sweep deleted files."
                );
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "Retention sweep failed; retrying next round."),
        }
    }
}
