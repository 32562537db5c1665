//! When a capture Job stops on its own: the capture asks it to (deleted, stop annotation,
//! stopping or finished phase, recreated under the same name), or no selected pod has run on the
//! node for a while. Stopping this way needs no pod deletion: the process closes and uploads its
//! last file, reports Finished and exits 0, and the Job completes.

use std::time::{Duration, Instant};

use kube::ResourceExt;
use nightcap_api::{PacketCapture, Phase, capture::STOP_ANNOTATION};

/// Why the capture asks this node to stop, if it does.
pub(super) fn stop_requested(pc: &PacketCapture, uid: &str) -> Option<String> {
    if pc.uid().as_deref() != Some(uid) {
        return Some("the PacketCapture was recreated under the same name".into());
    }
    if pc.metadata.deletion_timestamp.is_some() {
        return Some("the PacketCapture is being deleted".into());
    }
    if let Some(why) = pc.annotations().get(STOP_ANNOTATION) {
        return Some(format!("stop was requested ({why})"));
    }
    match pc.status.as_ref().and_then(|s| s.phase) {
        Some(p @ (Phase::Uploading | Phase::Succeeded | Phase::Failed | Phase::Stopped)) => {
            Some(format!("the capture is {p:?}"))
        }
        _ => None,
    }
}

/// Ends the capture after `after` without a selected pod on the node.
#[derive(Debug)]
pub(super) struct IdleTimer {
    after: Option<Duration>,
    since: Option<Instant>,
}

impl IdleTimer {
    pub fn new(after: Option<Duration>) -> Self {
        Self { after, since: None }
    }

    /// Records whether anything is captured now; true once idle for long enough.
    pub fn expired(&mut self, capturing: bool, now: Instant) -> bool {
        if capturing {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        self.after.is_some_and(|a| now.duration_since(since) >= a)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use nightcap_api::{PacketCaptureSpec, PacketCaptureStatus};

    use super::*;

    fn pc() -> PacketCapture {
        let mut c = PacketCapture::new("c", PacketCaptureSpec::default());
        c.metadata.uid = Some("u1".into());
        c
    }

    #[test]
    fn what_stops_a_node() {
        assert_eq!(stop_requested(&pc(), "u1"), None);
        assert!(stop_requested(&pc(), "u2").is_some_and(|w| w.contains("recreated")));
        let mut deleting = pc();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(stop_requested(&deleting, "u1").is_some_and(|w| w.contains("deleted")));
        let mut annotated = pc();
        annotated.metadata.annotations = Some(BTreeMap::from([(
            STOP_ANNOTATION.to_string(),
            "alert resolved".into(),
        )]));
        assert!(stop_requested(&annotated, "u1").is_some_and(|w| w.contains("alert resolved")));
        for (phase, stops) in [
            (Phase::Pending, false),
            (Phase::Scheduled, false),
            (Phase::Capturing, false),
            (Phase::Uploading, true),
            (Phase::Succeeded, true),
            (Phase::Failed, true),
            (Phase::Stopped, true),
        ] {
            let mut c = pc();
            c.status = Some(PacketCaptureStatus {
                phase: Some(phase),
                ..Default::default()
            });
            assert_eq!(stop_requested(&c, "u1").is_some(), stops, "{phase:?}");
        }
    }

    #[test]
    fn idle_timer() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut never = IdleTimer::new(None);
        assert!(!never.expired(false, s(1000)));
        let mut t = IdleTimer::new(Some(Duration::from_secs(30)));
        assert!(!t.expired(false, s(0)));
        assert!(!t.expired(false, s(29)));
        assert!(!t.expired(true, s(30)), "a pod is back");
        assert!(!t.expired(false, s(31)));
        assert!(!t.expired(false, s(60)));
        assert!(t.expired(false, s(61)));
    }
}
