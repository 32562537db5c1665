//! Retention: the files of a capture are deleted `ttlSecondsAfterFinished` after it finished.
//!
//! Deciding is pure ([`expired`] over plain values and an injected `now`); sweeping deletes only
//! the objects under `{prefix}/{namespace}/{capture}/{uid}/` of an expired capture — a capture
//! re-created with the same name has another uid and keeps its files.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use nightcap_api::PacketCapture;
use object_store::ObjectStore;
use tracing::info;

use crate::{
    error::{Error, Result},
    layout::KeyPrefix,
    list::{Lister, from_timestamp},
};

/// What retention needs to know about one capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionItem {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// When it finished (`status.completionTime`), if it has.
    pub finished_at: Option<DateTime<Utc>>,
    /// `spec.ttlSecondsAfterFinished`, if set.
    pub ttl_seconds: Option<i64>,
}

impl RetentionItem {
    /// From a PacketCapture; `None` without namespace, name or uid.
    pub fn from_capture(pc: &PacketCapture) -> Option<Self> {
        let status = pc.status.as_ref();
        let finished = status
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_finished());
        Some(Self {
            namespace: pc.metadata.namespace.clone()?,
            name: pc.metadata.name.clone()?,
            uid: pc.metadata.uid.clone()?,
            finished_at: status
                .filter(|_| finished)
                .and_then(|s| s.completion_time.as_ref())
                .map(|t| from_timestamp(t.0)),
            ttl_seconds: pc.spec.ttl_seconds_after_finished,
        })
    }

    /// When its files expire: finished time + TTL, if both are known.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        let ttl = self.ttl_seconds?.max(0);
        self.finished_at?
            .checked_add_signed(Duration::try_seconds(ttl)?)
    }
}

/// The captures whose files are due for deletion at `now`.
pub fn expired(items: &[RetentionItem], now: DateTime<Utc>) -> Vec<&RetentionItem> {
    items
        .iter()
        .filter(|i| i.expires_at().is_some_and(|at| at <= now))
        .collect()
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Captures whose files were due.
    pub expired_captures: usize,
    /// Keys deleted.
    pub deleted: Vec<String>,
}

/// Deletes the files of every capture in `items` that expired at `now`.
pub async fn sweep(
    store: Arc<dyn ObjectStore>,
    prefix: &KeyPrefix,
    items: &[RetentionItem],
    now: DateTime<Utc>,
) -> Result<SweepReport> {
    let lister = Lister::new(store.clone(), prefix.clone()).with_attributes(false);
    let mut report = SweepReport::default();
    for item in expired(items, now) {
        report.expired_captures += 1;
        let dir = prefix.capture_uid(&item.namespace, &item.name, &item.uid)?;
        let keys: Vec<_> = lister
            .list_objects(&dir)
            .await?
            .into_iter()
            .map(|(m, _)| m.location)
            .collect();
        if keys.is_empty() {
            continue;
        }
        let deleted: Vec<_> = store
            .delete_stream(futures::stream::iter(keys.into_iter().map(Ok)).boxed())
            .try_collect()
            .await
            .map_err(|source| Error::DeleteFailed {
                key: dir.to_string(),
                source,
            })?;
        info!(namespace = %item.namespace, name = %item.name, uid = %item.uid, files = deleted.len(), "Deleted expired capture files.");
        report
            .deleted
            .extend(deleted.into_iter().map(|p| p.to_string()));
    }
    report.deleted.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("valid")
    }

    fn item(name: &str, finished: Option<i64>, ttl: Option<i64>) -> RetentionItem {
        RetentionItem {
            namespace: "ns".into(),
            name: name.into(),
            uid: "0a1b2c3d-0000-4000-8000-00000000abcd".into(),
            finished_at: finished.map(t),
            ttl_seconds: ttl,
        }
    }

    #[test]
    fn expiry_table() {
        let items = [
            item("due", Some(0), Some(60)),
            item("exactly-due", Some(40), Some(60)),
            item("not-yet", Some(50), Some(60)),
            item("no-ttl", Some(0), None),
            item("running", None, Some(0)),
            item("zero-ttl", Some(100), Some(0)),
            item("negative-ttl", Some(100), Some(-5)),
            item("huge-ttl", Some(0), Some(i64::MAX)),
        ];
        let names: Vec<_> = expired(&items, t(100))
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(names, ["due", "exactly-due", "zero-ttl", "negative-ttl"]);
    }

    #[test]
    fn from_capture_needs_a_finished_phase() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        use nightcap_api::{PacketCaptureSpec, PacketCaptureStatus, Phase};
        let mut pc = PacketCapture::new(
            "c",
            PacketCaptureSpec {
                ttl_seconds_after_finished: Some(10),
                ..Default::default()
            },
        );
        pc.metadata.namespace = Some("ns".into());
        pc.metadata.uid = Some("0a1b2c3d-0000-4000-8000-00000000abcd".into());
        let done = jiff::Timestamp::from_second(1_800_000_000).expect("valid");
        pc.status = Some(PacketCaptureStatus {
            phase: Some(Phase::Capturing),
            completion_time: Some(Time(done)),
            ..Default::default()
        });
        assert_eq!(
            RetentionItem::from_capture(&pc)
                .expect("has names")
                .expires_at(),
            None
        );
        if let Some(s) = pc.status.as_mut() {
            s.phase = Some(Phase::Succeeded);
        }
        assert_eq!(
            RetentionItem::from_capture(&pc)
                .expect("has names")
                .expires_at(),
            Some(t(10))
        );
        pc.metadata.uid = None;
        assert!(RetentionItem::from_capture(&pc).is_none());
    }
}
