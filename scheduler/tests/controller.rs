//! The controller against the API test server, authenticated as the scheduler's service account
//! with exactly the rights of manifests/scheduler.yaml. No kubelets run here: Jobs stay Active,
//! which is what these tests need (the capture engine is exercised in cli/tests).

mod common;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use nightcap_api::{NodeCaptureState, PacketCaptureSpec, Phase};
use serde_json::json;

fn phase(c: &nightcap_api::PacketCapture) -> Option<Phase> {
    c.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test]
async fn jobs_follow_pods_across_nodes() {
    let cluster = Cluster::start().await;
    for n in ["node-a", "node-b", "node-c", "node-d"] {
        cluster.node(n, true).await;
    }
    cluster.pod("web-1", "node-a").await;
    cluster.pod("web-2", "node-b").await;
    let scheduler = Scheduler::start(cluster.scheduler_client(), "scheduler-0", None);
    let created = cluster.capture("web-debug").await;
    let uid = created.uid().expect("uid");

    let nodes = eventually("Jobs on node-a and node-b", || async {
        let n = cluster.job_nodes().await;
        (n == ["node-a", "node-b"]).then_some(n)
    })
    .await;
    assert_eq!(nodes.len(), 2);
    let jobs = cluster.jobs().await;
    let job = &jobs["node-a"];
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    assert_eq!(pod.node_name.as_deref(), Some("node-a"));
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("PacketCapture", uid.as_str(), Some(true))
    );
    let deadline = job
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .expect("deadline");
    assert!(
        (1..=600).contains(&deadline),
        "deadline is the remaining window: {deadline}"
    );

    let capture = eventually("status with both nodes", || async {
        let c = cluster.get_capture("web-debug").await?;
        let s = c.status.as_ref()?;
        (s.nodes.len() == 2 && s.accepted_spec.is_some()).then_some(c)
    })
    .await;
    assert!(
        capture
            .finalizers()
            .iter()
            .any(|f| f == "nightcap.dev/stop-jobs")
    );
    assert_eq!(phase(&capture), Some(Phase::Scheduled));
    let status = capture.status.as_ref().expect("status");
    assert_eq!(
        status.nodes["node-a"].state,
        Some(NodeCaptureState::Scheduled)
    );
    assert_eq!(
        status.nodes["node-a"].job.as_deref(),
        Some(job.name_any().as_str())
    );

    // The pod moves from node-a to node-c.
    cluster.delete_pod("web-1").await;
    cluster.pod("web-1b", "node-c").await;
    eventually("a Job on node-c and none on node-a", || async {
        let n = cluster.jobs().await;
        (n.contains_key("node-c") && !n.contains_key("node-a")).then_some(())
    })
    .await;

    // Scale-out to node-d.
    cluster.pod("web-3", "node-d").await;
    eventually("a Job on node-d", || async {
        cluster
            .job_nodes()
            .await
            .contains(&"node-d".to_string())
            .then_some(())
    })
    .await;

    // node-b is deleted: its Job stops and the node is marked Failed.
    cluster.delete_node("node-b").await;
    let c = eventually("node-b Failed and its Job gone", || async {
        let c = cluster.get_capture("web-debug").await?;
        let failed =
            c.status.as_ref()?.nodes.get("node-b")?.state == Some(NodeCaptureState::Failed);
        (failed && !cluster.jobs().await.contains_key("node-b")).then_some(c)
    })
    .await;
    assert!(
        c.status.expect("status").nodes["node-b"]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("deleted")
    );

    let reasons = cluster.event_reasons().await;
    let started = reasons.iter().filter(|r| *r == "JobStarted").count();
    let stopped = reasons.iter().filter(|r| *r == "JobStopped").count();
    assert_eq!(started, 4, "a, b, c, d: {reasons:?}");
    assert_eq!(stopped, 2, "a (pods gone), b (node gone): {reasons:?}");
    assert_eq!(
        scheduler.metric("nightcap_scheduler_jobs_started_total"),
        4.0
    );
    scheduler.stop().await;
}

#[tokio::test]
async fn spec_edit_is_reported_and_the_capture_keeps_its_spec() {
    let cluster = Cluster::start().await;
    cluster.node("node-a", true).await;
    cluster.pod("web-1", "node-a").await;
    let _scheduler = Scheduler::start(cluster.scheduler_client(), "scheduler-0", None);
    cluster.capture("web-debug").await;
    let before = eventually("accepted", || async {
        let c = cluster.get_capture("web-debug").await?;
        c.status.as_ref()?.accepted_spec.clone()
    })
    .await;
    let patch = json!({"spec": {"duration": "1h"}});
    cluster
        .captures()
        .patch("web-debug", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("spec edited");
    let c = eventually("SpecChanged condition", || async {
        let c = cluster.get_capture("web-debug").await?;
        let found = c
            .status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == "SpecChanged" && c.status == "True");
        found.then_some(c)
    })
    .await;
    let status = c.status.expect("status");
    assert_eq!(
        status.accepted_spec.as_ref(),
        Some(&before),
        "the accepted spec is kept"
    );
    assert_eq!(before.duration.as_deref(), Some("10m"));
    eventually("a SpecChanged Warning Event", || async {
        cluster.events().await.into_iter().find(|e| {
            e.reason.as_deref() == Some("SpecChanged") && e.type_.as_deref() == Some("Warning")
        })
    })
    .await;
    assert_eq!(cluster.job_nodes().await, ["node-a"]);
}

#[tokio::test]
async fn deleting_a_capture_stops_its_jobs_then_releases_it() {
    let cluster = Cluster::start().await;
    cluster.node("node-a", true).await;
    cluster.node("node-b", true).await;
    cluster.pod("web-1", "node-a").await;
    cluster.pod("web-2", "node-b").await;
    let _scheduler = Scheduler::start(cluster.scheduler_client(), "scheduler-0", None);
    cluster.capture("web-debug").await;
    eventually("two Jobs", || async {
        (cluster.job_nodes().await.len() == 2).then_some(())
    })
    .await;
    cluster
        .captures()
        .delete("web-debug", &DeleteParams::default())
        .await
        .expect("capture deleted");
    eventually("capture and Jobs gone", || async {
        let gone = cluster.get_capture("web-debug").await.is_none();
        (gone && cluster.jobs().await.is_empty()).then_some(())
    })
    .await;
    let reasons = cluster.event_reasons().await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "JobStopped").count(),
        2,
        "{reasons:?}"
    );
}

#[tokio::test]
async fn invalid_spec_fails_with_a_condition_and_an_event() {
    let cluster = Cluster::start().await;
    cluster.node("node-a", true).await;
    let _scheduler = Scheduler::start(cluster.scheduler_client(), "scheduler-0", None);
    let mut spec = PacketCaptureSpec {
        node_names: vec!["node-a".into()],
        duration: Some("10m".into()),
        ..PacketCaptureSpec::default()
    };
    spec.selector = Some(Default::default()); // pods AND nodes: rejected
    cluster.create_capture("both", spec).await;
    let c = eventually("Failed", || async {
        let c = cluster.get_capture("both").await?;
        (phase(&c) == Some(Phase::Failed)).then_some(c)
    })
    .await;
    let status = c.status.expect("status");
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed condition");
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(
        failed.message.contains("spec.selector"),
        "{}",
        failed.message
    );
    let event = eventually("InvalidSpec Event", || async {
        cluster
            .events()
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("InvalidSpec"))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(cluster.jobs().await.is_empty());
}

#[tokio::test]
async fn restarted_scheduler_creates_no_duplicate_jobs_and_converges() {
    let cluster = Cluster::start().await;
    for n in ["node-a", "node-b", "node-c"] {
        cluster.node(n, true).await;
    }
    cluster.pod("web-1", "node-a").await;
    cluster.pod("web-2", "node-b").await;
    let first = Scheduler::start(cluster.scheduler_client(), "scheduler-0", None);
    cluster.capture("web-debug").await;
    eventually("two Jobs", || async {
        (cluster.job_nodes().await.len() == 2).then_some(())
    })
    .await;
    first.kill().await;
    // While no scheduler runs, a pod is added on node-c.
    cluster.pod("web-3", "node-c").await;
    let second = Scheduler::start(cluster.scheduler_client(), "scheduler-1", None);
    eventually("a Job on node-c from the new scheduler", || async {
        (cluster.job_nodes().await == ["node-a", "node-b", "node-c"]).then_some(())
    })
    .await;
    let api: Api<Job> = Api::namespaced(cluster.admin.clone(), NS);
    let all = api.list(&Default::default()).await.expect("jobs").items;
    assert_eq!(all.len(), 3, "one Job per node, no duplicates");
    assert_eq!(second.metric("nightcap_scheduler_jobs_started_total"), 1.0);
    let c = eventually("status with three nodes", || async {
        let c = cluster.get_capture("web-debug").await?;
        (c.status.as_ref()?.nodes.len() == 3).then_some(c)
    })
    .await;
    assert_eq!(c.status.and_then(|s| s.node_count), Some(3));
}

/// Captures that exist when the scheduler starts are reconciled at once, while the pod cache is
/// still listing (more pods than one list page). Every one of them must be planned, not only the
/// reconcile that happened to wait last on the cache.
#[tokio::test]
async fn every_capture_is_planned_when_pods_are_still_listing() {
    use futures::{StreamExt, TryStreamExt, stream};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;

    let cluster = Cluster::start().await;
    cluster.node("node-a", true).await;
    cluster.pod("web-1", "node-a").await;
    // Unselected pods so that the scheduler's pod list takes several pages.
    let pods: Api<Pod> = Api::namespaced(cluster.admin.clone(), NS);
    stream::iter(0..1600)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("other-{i}"), "labels": {"app": "other"}},
                    "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "app"}]},
                }))
                .expect("pod JSON");
                pods.create(&PostParams::default(), &pod).await.map(drop)
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("pods created");
    let names: Vec<String> = (0..30).map(|i| format!("debug-{i}")).collect();
    for name in &names {
        cluster.capture(name).await;
    }
    let _scheduler = Scheduler::start(cluster.scheduler_client(), "scheduler-0", None);
    eventually("a Job for every capture", || async {
        let api: Api<Job> = Api::namespaced(cluster.admin.clone(), NS);
        let jobs = api.list(&Default::default()).await.expect("jobs").items;
        (jobs.len() == names.len()).then_some(())
    })
    .await;
    for name in &names {
        let c = cluster.get_capture(name).await.expect("capture exists");
        assert_eq!(phase(&c), Some(Phase::Scheduled), "{name}");
    }
}
