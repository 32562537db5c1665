//! Without `--capture-image` the scheduler reads its own Pod (`NIGHTCAP_POD_NAME`,
//! `NIGHTCAP_POD_NAMESPACE`) from the API test server, as its service account with the rights
//! of manifests/scheduler.yaml, and its capture Jobs run that image.

mod common;

use std::{sync::Arc, time::Duration};

use clap::{CommandFactory, Parser};
use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use nightcap_scheduler::{
    SchedulerArgs,
    controller::{self, ControllerSettings},
    metrics::Metrics,
    own_image::CaptureImage,
    plan::Planner,
};
use serde_json::json;

const DIGEST: &str = "sha256:5e0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";

#[derive(Debug, Parser)]
struct Scheduler {
    #[command(flatten)]
    args: SchedulerArgs,
}

fn parse(args: &[&str]) -> SchedulerArgs {
    Scheduler::try_parse_from(std::iter::once("scheduler").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .args
}

/// The scheduler's Pod as a Deployment makes it: a sidecar first, then `scheduler`, running,
/// with the digest the kubelet resolved in its status.
async fn scheduler_pod(cluster: &Cluster, name: &str) {
    let api: Api<Pod> = Api::namespaced(cluster.admin.clone(), SYSTEM_NS);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "scheduler"}},
        "spec": {"nodeName": "node-s", "containers": [
            {"name": "proxy", "image": "registry.example/proxy:2", "imagePullPolicy": "Always"},
            {"name": "scheduler", "image": "registry.example/nightcap:0.1.0",
             "imagePullPolicy": "IfNotPresent"},
        ]},
    }))
    .expect("pod JSON");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("scheduler pod created");
    let status = json!({"status": {"phase": "Running", "containerStatuses": [
        {"name": "proxy", "image": "registry.example/proxy:2", "ready": true, "restartCount": 0,
         "imageID": "registry.example/proxy@sha256:1111111111111111111111111111111111111111111111111111111111111111"},
        {"name": "scheduler", "image": "registry.example/nightcap:0.1.0", "ready": true,
         "restartCount": 0, "imageID": format!("registry.example/nightcap@{DIGEST}")},
    ]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("scheduler pod status patched");
}

#[tokio::test]
async fn capture_jobs_run_the_schedulers_own_image() {
    let cluster = Cluster::start().await;
    scheduler_pod(&cluster, "nightcap-scheduler-7d9f-abcde").await;
    let args = parse(&[
        "--pod-name",
        "nightcap-scheduler-7d9f-abcde",
        "--pod-namespace",
        SYSTEM_NS,
    ]);
    let client = Client::try_from(cluster.scheduler_client()).expect("scheduler client");
    let image = args
        .capture_image_source()
        .expect("the own Pod names the image")
        .resolve(&client)
        .await
        .expect("own Pod readable");
    assert_eq!(
        image,
        CaptureImage {
            image: format!("registry.example/nightcap@{DIGEST}"),
            pull_policy: Some("IfNotPresent".into()),
        },
        "the scheduler container's image, pinned to the digest in its status"
    );

    // The controller with these settings puts that image into the Job it creates.
    let settings = ControllerSettings {
        planner: Planner::new(test_plan()),
        jobs: args.job_config(image.clone()),
        instance: Some("scheduler-0".into()),
        debounce: Duration::from_millis(20),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = Arc::new(Metrics::new());
    metrics.set_leader(true);
    let clock: controller::Clock = Arc::new(jiff::Timestamp::now);
    let running = tokio::spawn(controller::run(
        client,
        settings,
        metrics,
        clock,
        None,
        async {
            let _ = stop_rx.await;
        },
    ));
    cluster.node("node-a", true).await;
    cluster.pod("web-1", "node-a").await;
    cluster.capture("web-debug").await;
    let job = eventually("a Job on node-a", || async {
        cluster.jobs().await.remove("node-a")
    })
    .await;
    let _ = stop_tx.send(());
    running.await.expect("controller stops");
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod template");
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some(image.image.as_str()));
    assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
}

#[tokio::test]
async fn flags_win_over_the_own_pod() {
    let cluster = Cluster::start().await;
    scheduler_pod(&cluster, "nightcap-scheduler-0").await;
    let args = parse(&[
        "--capture-image",
        "registry.example/nightcap:0.2.0",
        "--capture-image-pull-policy",
        "Always",
        "--pod-name",
        "nightcap-scheduler-0",
        "--pod-namespace",
        SYSTEM_NS,
    ]);
    let client = Client::try_from(cluster.scheduler_client()).expect("scheduler client");
    let image = args
        .capture_image_source()
        .expect("flag")
        .resolve(&client)
        .await
        .expect("no API call needed");
    assert_eq!(
        image,
        CaptureImage {
            image: "registry.example/nightcap:0.2.0".into(),
            pull_policy: Some("Always".into()),
        }
    );
    // Only the pull policy flag: the own image with that policy.
    let args = parse(&[
        "--capture-image-pull-policy",
        "Never",
        "--pod-name",
        "nightcap-scheduler-0",
        "--pod-namespace",
        SYSTEM_NS,
    ]);
    let image = args
        .capture_image_source()
        .expect("own pod")
        .resolve(&client)
        .await
        .expect("own Pod readable");
    assert_eq!(image.image, format!("registry.example/nightcap@{DIGEST}"));
    assert_eq!(image.pull_policy.as_deref(), Some("Never"));
}

#[tokio::test]
async fn a_missing_own_pod_is_a_clear_start_up_error() {
    let cluster = Cluster::start().await;
    let args = parse(&["--pod-name", "gone-0", "--pod-namespace", SYSTEM_NS]);
    let client = Client::try_from(cluster.scheduler_client()).expect("scheduler client");
    let err = args
        .capture_image_source()
        .expect("names a pod")
        .resolve(&client)
        .await
        .expect_err("the pod does not exist")
        .to_string();
    for part in [
        "nightcap-system/gone-0",
        "does not exist",
        "NIGHTCAP_POD_NAME",
        "--capture-image",
    ] {
        assert!(err.contains(part), "{part:?} missing in: {err}");
    }
}

#[test]
fn neither_flag_nor_own_pod_says_what_to_set() {
    let known: Vec<String> = Scheduler::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for env in [
        "NIGHTCAP_CAPTURE_IMAGE",
        "NIGHTCAP_POD_NAME",
        "NIGHTCAP_POD_NAMESPACE",
    ] {
        assert!(known.iter().any(|k| k == env), "{env} is not read");
    }
    if [
        "NIGHTCAP_CAPTURE_IMAGE",
        "NIGHTCAP_POD_NAME",
        "NIGHTCAP_POD_NAMESPACE",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
    {
        panic!(
            "unset NIGHTCAP_CAPTURE_IMAGE, NIGHTCAP_POD_NAME and NIGHTCAP_POD_NAMESPACE to run this test"
        );
    }
    let err = parse(&[])
        .capture_image_source()
        .expect_err("nothing names an image")
        .to_string();
    for part in [
        "--capture-image (NIGHTCAP_CAPTURE_IMAGE)",
        "NIGHTCAP_POD_NAME and NIGHTCAP_POD_NAMESPACE",
        "downward API",
    ] {
        assert!(err.contains(part), "{part:?} missing in: {err}");
    }
}
