//! Leader election: of two schedulers exactly one acts; when the leader is killed (its Lease
//! is not released) the other takes over once the Lease expires, and goes on where it stopped.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

fn events_by(events: &[k8s_openapi::api::events::v1::Event], reason: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.reporting_instance.clone().unwrap_or_default())
        .collect()
}

async fn holder(cluster: &Cluster) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(cluster.admin.clone(), SYSTEM_NS);
    leases
        .get_opt("nightcap-scheduler")
        .await
        .expect("lease readable")?
        .spec?
        .holder_identity
}

/// The one leader among `schedulers`, once exactly one claims it.
async fn sole_leader(schedulers: &[&Scheduler]) -> String {
    eventually("exactly one leader", || async {
        let leaders: Vec<&String> = schedulers
            .iter()
            .filter(|s| s.is_leader())
            .map(|s| &s.identity)
            .collect();
        (leaders.len() == 1).then(|| leaders[0].clone())
    })
    .await
}

#[tokio::test]
async fn exactly_one_scheduler_acts_and_the_other_takes_over_when_it_is_killed() {
    let cluster = Cluster::start().await;
    for n in ["node-a", "node-b", "node-c"] {
        cluster.node(n, true).await;
    }
    cluster.pod("web-1", "node-a").await;
    cluster.pod("web-2", "node-b").await;
    let lease = Duration::from_secs(3);
    let mut a = Some(Scheduler::start(
        cluster.scheduler_client(),
        "scheduler-a",
        Some(lease),
    ));
    let mut b = Some(Scheduler::start(
        cluster.scheduler_client(),
        "scheduler-b",
        Some(lease),
    ));
    let leader = sole_leader(&[a.as_ref().expect("a"), b.as_ref().expect("b")]).await;
    assert_eq!(holder(&cluster).await.as_deref(), Some(leader.as_str()));

    cluster.capture("web-debug").await;
    eventually("Jobs on node-a and node-b", || async {
        (cluster.job_nodes().await == ["node-a", "node-b"]).then_some(())
    })
    .await;
    // Never two leaders, and only the leader acted.
    for _ in 0..20 {
        let both = a.as_ref().expect("a").is_leader() && b.as_ref().expect("b").is_leader();
        assert!(!both, "two leaders at once");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let started = events_by(&cluster.events().await, "JobStarted");
    assert_eq!(
        started,
        [leader.clone(), leader.clone()],
        "only the leader started Jobs"
    );

    // Kill the leader: no graceful release, the Lease must expire.
    let (killed, survivor) = if leader == "scheduler-a" {
        (a.take(), b.take())
    } else {
        (b.take(), a.take())
    };
    let survivor = survivor.expect("survivor");
    let killed_at = Instant::now();
    killed.expect("leader").kill().await;
    eventually("the survivor leads", || async {
        survivor.is_leader().then_some(())
    })
    .await;
    let takeover = killed_at.elapsed();
    println!(
        "leader killed -> survivor leads after {:.2}s (lease duration {:.0}s)",
        takeover.as_secs_f64(),
        lease.as_secs_f64()
    );
    assert_eq!(
        holder(&cluster).await.as_deref(),
        Some(survivor.identity.as_str())
    );

    // The survivor continues: scale-out to node-c, no duplicate Jobs.
    cluster.pod("web-3", "node-c").await;
    eventually("a Job on node-c", || async {
        (cluster.job_nodes().await == ["node-a", "node-b", "node-c"]).then_some(())
    })
    .await;
    assert_eq!(cluster.jobs().await.len(), 3);
    let started = events_by(&cluster.events().await, "JobStarted");
    assert_eq!(started.len(), 3, "{started:?}");
    assert_eq!(
        started.iter().filter(|i| **i == survivor.identity).count(),
        1,
        "{started:?}"
    );
    survivor.stop().await;
}

#[tokio::test]
async fn a_leader_that_stops_gracefully_hands_over_at_once() {
    let cluster = Cluster::start().await;
    // A long Lease: only the release lets the other take over before the test gives up.
    let lease = Duration::from_secs(120);
    let a = Scheduler::start(cluster.scheduler_client(), "scheduler-a", Some(lease));
    eventually("a leads", || async { a.is_leader().then_some(()) }).await;
    let b = Scheduler::start(cluster.scheduler_client(), "scheduler-b", Some(lease));
    let stopped_at = Instant::now();
    a.stop().await;
    assert_eq!(
        holder(&cluster).await,
        None,
        "the Lease is released on shutdown"
    );
    eventually("b leads", || async { b.is_leader().then_some(()) }).await;
    println!(
        "graceful handover took {:.2}s",
        stopped_at.elapsed().as_secs_f64()
    );
    assert_eq!(holder(&cluster).await.as_deref(), Some("scheduler-b"));
}
