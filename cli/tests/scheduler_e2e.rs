//! End to end with real parts: `nightcap scheduler` (a child process) plans capture Jobs on the
//! API test server; fake kubelets run them as `nightcap capture --capture …` processes that
//! capture real traffic in the pods' network namespaces and upload pcapng files to the S3 test
//! server. Needs root (network namespaces, eBPF): CI runs as root.

mod e2e;

use e2e::*;
use kube::{ResourceExt, api::DeleteParams};
use nightcap_api::{NodeCaptureState, PacketCaptureSpec, Phase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_follow_pods_across_nodes_and_capture_into_s3() {
    let mut cluster = Cluster::start(&["node-a", "node-b", "node-c"]).await;
    let ip1 = cluster.workload("web-1", "node-a").await;
    let ip2 = cluster.workload("web-2", "node-b").await;
    cluster.start_scheduler();
    let created = cluster.capture("web-debug").await;
    let uid = created.uid().expect("uid");

    // Two pods on two nodes: two Jobs, each capturing its pod.
    cluster.attached("web-debug", "node-a", "web-1").await;
    cluster.attached("web-debug", "node-b", "web-2").await;
    assert_eq!(cluster.job_nodes().await, ["node-a", "node-b"]);
    send(ip1, "before-move-a", 20);
    send(ip2, "before-move-b", 20);

    // web-1 moves from node-a to node-b: the old namespace is deleted, a new pod with the same
    // labels starts on node-b and is attached by node-b's Job.
    cluster.delete_pod("web-1").await;
    let ip1b = cluster.workload("web-1-moved", "node-b").await;
    cluster.attached("web-debug", "node-b", "web-1-moved").await;
    send(ip1b, "after-move", 20);

    // Scale-out to a third node: a third Job.
    let ip3 = cluster.workload("web-3", "node-c").await;
    cluster.attached("web-debug", "node-c", "web-3").await;
    send(ip3, "scaled-out", 20);

    // node-a has no selected pod left: after the grace period its Job stops, uploads its last
    // file and reports it.
    let node_a = eventually("node-a Finished with its file in status", || async {
        let c = cluster.get_capture("web-debug").await?;
        let n = c.status?.nodes.get("node-a")?.clone();
        (n.state == Some(NodeCaptureState::Finished) && !n.files.is_empty()).then_some(n)
    })
    .await;
    assert!(
        node_a
            .files
            .iter()
            .all(|f| f.key.contains(&format!("/{uid}/node-a/"))),
        "{:?}",
        node_a.files
    );
    assert!(
        node_a.packets >= 20,
        "node-a counted {} packets",
        node_a.packets
    );
    // node-a's Job ends by itself once its pods are gone; wait for it rather than race it.
    eventually("only node-b and node-c have running Jobs", || async {
        (cluster.job_nodes().await == ["node-b", "node-c"]).then_some(())
    })
    .await;

    // Deleting the capture stops the remaining Jobs; they upload their last files first.
    cluster
        .captures()
        .delete("web-debug", &DeleteParams::default())
        .await
        .expect("capture deleted");
    eventually("capture and Jobs gone", || async {
        let gone = cluster.get_capture("web-debug").await.is_none();
        (gone && cluster.all_jobs().await.is_empty()).then_some(())
    })
    .await;

    // The stopped processes upload their last files (on SIGTERM) before they exit.
    let want = [
        ("before-move-a", "node-a"),
        ("before-move-b", "node-b"),
        ("after-move", "node-b"),
        ("scaled-out", "node-c"),
    ];
    eventually("every marker in the expected node's files", || async {
        want.iter()
            .all(|(m, n)| cluster.nodes_with(m).contains(*n))
            .then_some(())
    })
    .await;
    cluster.capture_processes_stopped().await;
    let files = cluster.files();
    assert!(
        files
            .iter()
            .all(|(_, key, _)| key.starts_with(&format!("e2e/team-a/web-debug/{uid}/")))
    );
    for (marker, node) in want {
        let nodes: Vec<String> = cluster.nodes_with(marker).into_iter().collect();
        assert_eq!(nodes, [node], "{marker}: files {:?}", keys(&files));
    }
    // Each pod is its own pcapng interface, named namespace/pod.
    for (node, pod) in [
        ("node-a", "team-a/web-1"),
        ("node-b", "team-a/web-1-moved"),
        ("node-c", "team-a/web-3"),
    ] {
        let named = files
            .iter()
            .any(|(n, _, bytes)| n == node && contains(bytes, pod.as_bytes()));
        assert!(named, "no interface {pod} in {node}'s files");
    }
    let reasons: Vec<String> = cluster
        .events()
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| *r == "JobStarted").count(),
        3,
        "{reasons:?}"
    );
    // Every process stopped by itself (no Job had to be deleted) and its Job completed.
    assert_eq!(
        reasons.iter().filter(|r| *r == "JobFinished").count(),
        3,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| *r == "JobStopped").count(),
        0,
        "{reasons:?}"
    );
}

fn keys(files: &[(String, String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(_, k, _)| k.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_killed_and_restarted_creates_no_duplicates_and_converges() {
    let mut cluster = Cluster::start(&["node-a", "node-b", "node-c"]).await;
    cluster.workload("web-1", "node-a").await;
    cluster.workload("web-2", "node-b").await;
    cluster.start_scheduler();
    cluster.capture("web-debug").await;
    cluster.attached("web-debug", "node-a", "web-1").await;
    cluster.attached("web-debug", "node-b", "web-2").await;

    // SIGKILL mid-capture; the capture Jobs keep running without it.
    cluster.kill_scheduler();
    let ip3 = cluster.workload("web-3", "node-c").await;
    cluster.start_scheduler();
    cluster.attached("web-debug", "node-c", "web-3").await;
    send(ip3, "after-restart", 10);
    let jobs = cluster.all_jobs().await;
    assert_eq!(jobs.len(), 3, "one Job per node, no duplicates");
    let c = eventually("status converges", || async {
        let c = cluster.get_capture("web-debug").await?;
        let s = c.status.clone()?;
        let all = ["node-a", "node-b", "node-c"].iter().all(|n| {
            s.nodes
                .get(*n)
                .is_some_and(|n| n.state == Some(NodeCaptureState::Capturing))
        });
        (all && s.phase == Some(Phase::Capturing) && s.node_count == Some(3)).then_some(c)
    })
    .await;
    assert!(c.finalizers().iter().any(|f| f == "nightcap.dev/stop-jobs"));

    // A bad spec is rejected with a Failed condition and a Warning Event; no Job starts.
    let bad = PacketCaptureSpec {
        node_names: vec!["node-a".into()],
        selector: Some(Default::default()),
        duration: Some("1m".into()),
        ..PacketCaptureSpec::default()
    };
    cluster
        .captures()
        .create(
            &Default::default(),
            &nightcap_api::PacketCapture::new("both", bad),
        )
        .await
        .expect("created");
    let failed = eventually("bad spec Failed", || async {
        let c = cluster.get_capture("both").await?;
        let s = c.status?;
        (s.phase == Some(Phase::Failed)).then_some(s)
    })
    .await;
    let cond = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed condition");
    assert_eq!(cond.reason, "InvalidSpec");
    eventually("InvalidSpec Event", || async {
        let events = cluster.events().await;
        events
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("InvalidSpec") && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        cluster.all_jobs().await.len(),
        3,
        "the bad capture started no Job"
    );

    cluster
        .captures()
        .delete("web-debug", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually("Jobs gone", || async {
        cluster.all_jobs().await.is_empty().then_some(())
    })
    .await;
    eventually("node-c's last file uploaded", || async {
        cluster
            .nodes_with("after-restart")
            .contains("node-c")
            .then_some(())
    })
    .await;
    cluster.capture_processes_stopped().await;
    assert_eq!(
        cluster
            .nodes_with("after-restart")
            .into_iter()
            .collect::<Vec<_>>(),
        ["node-c"]
    );
}
