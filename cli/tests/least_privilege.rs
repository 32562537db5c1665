//! Least privilege, proven by a container runtime: capture Jobs exactly as `nightcap scheduler`
//! builds them (`nightcap_scheduler::job::build_job`, default `--capture-attach host`), run by
//! the fake kubelet through runc from the nightcap image. With the capabilities the builder
//! adds the Job captures; with any one of them removed the capture fails and its node status
//! names the missing capability. No Job asks for `privileged`. Needs root, runc and umoci.

mod cluster;

use cluster::*;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use nightcap_api::{NodeCaptureState, PacketCapture};
use nightcap_scheduler::{
    job::{CaptureAttach, JobConfig, build_job, capabilities},
    plan::JobRequest,
};
use serde_json::json;

const NODE: &str = "node-a";

/// Creates a PacketCapture of the `app=logging` pods (UDP 53, so the eBPF filter is not empty)
/// and its node-a Job with `remove` taken out of the added capabilities.
async fn capture_without(night: &Night, name: &str, remove: Option<&str>) -> Job {
    let pc: PacketCapture = serde_json::from_value(json!({
        "apiVersion": "nightcap.dev/v1alpha1", "kind": "PacketCapture",
        "metadata": {"name": name, "namespace": APP_NS},
        "spec": {"selector": {"matchLabels": {"app": "logging"}},
            "filters": [{"protocol": "UDP", "ports": [53]}], "duration": "2m"},
    }))
    .expect("capture JSON");
    let pc = night
        .captures()
        .create(&PostParams::default(), &pc)
        .await
        .expect("capture created");
    let cfg = JobConfig {
        image: IMAGE.into(),
        namespace: Some(CAPTURE_NS.into()),
        backoff_limit: 0,
        log_filter: Some("info".into()),
        attach: CaptureAttach::Host,
        ..JobConfig::default()
    };
    let req = JobRequest {
        node: NODE.into(),
        name: format!("nc-{name}"),
        active_deadline_seconds: 120,
        pods: vec![format!("{APP_NS}/logging-0")],
    };
    let mut job = build_job(&pc, &req, &cfg).expect("the scheduler's Job");
    let container = &mut job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("pod spec")
        .containers[0];
    let sc = container
        .security_context
        .as_mut()
        .expect("securityContext");
    assert_ne!(
        sc.privileged,
        Some(true),
        "the capture Job never asks for privileged"
    );
    let caps = sc.capabilities.as_mut().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    if let Some(remove) = remove {
        let add = caps.add.as_mut().expect("added capabilities");
        let before = add.len();
        add.retain(|c| c != remove);
        assert_eq!(
            add.len() + 1,
            before,
            "{remove} is one of the added capabilities"
        );
    }
    night
        .jobs()
        .create(&PostParams::default(), &job)
        .await
        .expect("Job created")
}

/// The node's status in the capture once `done` holds for it.
async fn node_status(
    night: &Night,
    capture: &str,
    what: &str,
    done: impl Fn(&nightcap_api::NodeCaptureStatus) -> bool,
) -> nightcap_api::NodeCaptureStatus {
    eventually(what, || async {
        let c = night.captures().get_opt(capture).await.ok()??;
        let n = c.status?.nodes.get(NODE)?.clone();
        done(&n).then_some(n)
    })
    .await
}

/// Waits until the capture pod of `job` runs through runc.
async fn runs_through_runc(night: &Night, job: &Job) {
    let pods: Api<Pod> = Api::namespaced(night.admin.clone(), CAPTURE_NS);
    let selector = format!("job-name={}", job.name_any());
    eventually(
        &format!("the pod of {} running through runc", job.name_any()),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            let pod = list.items.into_iter().next()?;
            let cs = pod.status?.container_statuses?.into_iter().next()?;
            (cs.container_id.as_deref()?.starts_with("runc://") && cs.state?.running.is_some())
                .then_some(())
        },
    )
    .await;
}

/// Waits until `job` failed because its pod did (exit code non-zero, backoffLimit 0).
async fn job_failed(night: &Night, job: &Job) -> String {
    eventually(&format!("{} Failed", job.name_any()), || async {
        let j = night.jobs().get_opt(&job.name_any()).await.ok()??;
        let st = j.status?;
        let failed = st
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Failed" && c.status == "True")?;
        (st.failed == Some(1)).then_some(failed.reason.unwrap_or_default())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_added_capability_is_needed_and_no_job_is_privileged() {
    let night = Night::cluster().await;
    let ip = night
        .workload("logging-0", NODE, labels(&[("app", "logging")]))
        .await;
    let added: Vec<&str> = capabilities(CaptureAttach::Host)
        .iter()
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(added, ["NET_RAW", "BPF", "PERFMON"]);

    // Everything the builder adds: the pod is attached and its packets are counted.
    let full = capture_without(&night, "lp-all", None).await;
    let want = format!("{APP_NS}/logging-0");
    node_status(&night, "lp-all", "lp-all attached", |n| {
        n.state == Some(NodeCaptureState::Capturing) && n.pods.contains(&want)
    })
    .await;
    tokio::task::spawn_blocking(move || send_dns(ip, "least-privilege", 20))
        .await
        .expect("sent");
    let n = node_status(&night, "lp-all", "20 packets counted", |n| n.packets >= 20).await;
    assert_eq!(n.packets, 20, "{n:?}");
    runs_through_runc(&night, &full).await;

    // Each one removed: Failed on the node, the message names it, the pod and Job fail.
    for cap in added {
        let name = format!("lp-no-{}", cap.to_lowercase().replace('_', "-"));
        let job = capture_without(&night, &name, Some(cap)).await;
        let n = node_status(&night, &name, &format!("{name} fails"), |n| {
            n.state == Some(NodeCaptureState::Failed)
        })
        .await;
        let message = n.message.unwrap_or_default();
        assert!(
            message.contains(&format!("CAP_{cap}")),
            "without {cap} the message names it: {message}"
        );
        // The process exited non-zero: the pod failed, so did the Job (no retry helps).
        assert_eq!(job_failed(&night, &job).await, "BackoffLimitExceeded");
        eprintln!("without {cap}: {message}");
    }
}
