//! The night-time story in a cluster, every component its own process (see `cluster`): an
//! Alertmanager notification on JetStream and the same alert through the webhook start one
//! capture of the storefront `app=logging` pods on two nodes; capture Jobs run from the nightcap
//! image through runc with the install's security context; one pod moves to the other node
//! mid-capture; files reach S3 as they rotate; the on-call engineer downloads them with the
//! kubectl plugin and tshark sees both pods before and after the move; an editor without the
//! files right gets 403; a CaptureSchedule fires and its capture completes.

mod cluster;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use cluster::*;
use kube::{
    ResourceExt,
    api::{ListParams, PostParams},
};
use nightcap_api::{CaptureSchedule, CaptureTrigger, Phase};
use serde::Deserialize;
use serde_json::Value;

const FIRING: &str = include_str!("../../examples/alertmanager/dns-latency-firing.json");

fn resolved() -> String {
    let mut v: Value = serde_json::from_str(FIRING).expect("fixture");
    v["status"] = "resolved".into();
    v["alerts"][0]["status"] = "resolved".into();
    v["alerts"][0]["endsAt"] = "2026-12-02T02:30:00Z".into();
    v.to_string()
}

/// The document of `kind` in examples/cluster/storefront.yaml (the storefront DNS case).
fn example<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster/storefront.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {}", path.display()));
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{kind} in {}: {e}", path.display()))
}

fn pcapng_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut |p| {
        if p.extension().is_some_and(|e| e == "pcapng") {
            out.push(p.to_path_buf());
        }
    });
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_night_time_story_in_a_cluster() {
    let night = Night::start().await;
    let labels_of = |app: &str| labels(&[("app", app)]);

    // The storefront team's trigger and schedule (examples/cluster), created by its editor.
    let editor = client_for(&night.kubeconfig_of(EDITOR), EDITOR)
        .await
        .expect("editor client");
    let mut trigger: CaptureTrigger = example("CaptureTrigger");
    // Short files so that several rotate while the test runs.
    trigger.spec.template.spec.rotation = Some(nightcap_api::Rotation {
        max_file_seconds: Some(2),
        ..nightcap_api::Rotation::default()
    });
    trigger.spec.template.spec.duration = Some("5m".into());
    kube::Api::<CaptureTrigger>::namespaced(editor.clone(), APP_NS)
        .create(&PostParams::default(), &trigger)
        .await
        .expect("the editor creates the CaptureTrigger");
    let mut schedule: CaptureSchedule = example("CaptureSchedule");
    schedule.spec.schedule = "* * * * *".into();
    schedule.spec.suspend = false;
    schedule.spec.template.spec.duration = Some("3s".into());
    kube::Api::<CaptureSchedule>::namespaced(editor.clone(), APP_NS)
        .create(&PostParams::default(), &schedule)
        .await
        .expect("the editor creates the CaptureSchedule");

    let ip_a = night
        .workload("logging-0", "node-a", labels_of("logging"))
        .await;
    let ip_b = night
        .workload("logging-1", "node-b", labels_of("logging"))
        .await;
    let ip_web = night.workload("web-0", "node-a", labels_of("web")).await;

    // 02:13: Alertmanager fires — on JetStream and, through a second receiver, the webhook.
    // JetStream delivers first and creates the capture; the webhook's copy is deduplicated.
    night.publish_alert(FIRING).await;
    night.decision("jetstream", "created").await;
    assert_eq!(
        night.post_alert(FIRING).await,
        202,
        "{}",
        night.log("triggers")
    );
    night.decision("webhook", "deduplicated").await;
    let triggered = |c: &nightcap_api::PacketCapture| {
        c.labels().get("nightcap.dev/trigger") == Some(&trigger.name_any())
    };
    let capture = eventually("one capture from the alert", || async {
        let list = night.captures().list(&ListParams::default()).await.ok()?;
        let ours: Vec<_> = list.items.into_iter().filter(triggered).collect();
        (ours.len() == 1).then(|| ours[0].name_any())
    })
    .await;

    night.attached(&capture, "node-a", "logging-0").await;
    night.attached(&capture, "node-b", "logging-1").await;
    let send =
        |ip, marker: &'static str| tokio::task::spawn_blocking(move || send_dns(ip, marker, 30));
    send(ip_a, "before-move-a").await.expect("sent");
    send(ip_b, "before-move-b").await.expect("sent");
    send(ip_web, "not-selected").await.expect("sent");

    // Files reach S3 while the capture runs (rotation every 2 s).
    eventually("files in S3 while capturing", || async {
        let objs = night.objects();
        objs.iter()
            .filter(|(k, _)| k.contains(&format!("/{APP_NS}/{capture}/")))
            .count()
            .ge(&2)
            .then_some(())
    })
    .await;

    // logging-0 is rescheduled to node-b: node-b's Job attaches the new pod.
    night.delete_pod("logging-0").await;
    let ip_a2 = night
        .workload("logging-0", "node-b", labels_of("logging"))
        .await;
    night.attached(&capture, "node-b", "logging-0").await;
    send(ip_a2, "after-move-a").await.expect("sent");
    send(ip_b, "after-move-b").await.expect("sent");

    // The alert resolves: the capture stops early (Stopped) and every file is uploaded.
    assert_eq!(night.post_alert(&resolved()).await, 202);
    let done = eventually(
        "the capture is Stopped with every file uploaded",
        || async {
            let c = night.captures().get_opt(&capture).await.ok()??;
            (c.status.as_ref()?.phase == Some(Phase::Stopped)).then_some(c)
        },
    )
    .await;
    let status = done.status.expect("status");
    assert_eq!(
        status.nodes.keys().cloned().collect::<Vec<_>>(),
        ["node-a", "node-b"]
    );

    // Every capture Job ran through runc from the nightcap image, never privileged.
    let jobs = night
        .jobs()
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items;
    assert!(!jobs.is_empty());
    for job in &jobs {
        let pod = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some(IMAGE));
        let sc = c.security_context.as_ref().expect("securityContext");
        assert_ne!(sc.privileged, Some(true), "{}", job.name_any());
    }
    let capture_pods =
        kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(night.admin.clone(), CAPTURE_NS)
            .list(&ListParams::default())
            .await
            .expect("capture pods")
            .items;
    assert!(
        capture_pods.iter().all(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| {
                    cs.iter().all(|c| {
                        c.container_id
                            .as_deref()
                            .is_some_and(|id| id.starts_with("runc://"))
                    })
                })
        }),
        "capture pods not run by runc: {:#?}",
        capture_pods.iter().map(|p| &p.status).collect::<Vec<_>>()
    );

    // The on-call engineer downloads the files with the plugin (sha256-checked).
    let dl_dir = night.dir.path().join("download");
    let dl = night
        .plugin(
            ONCALL,
            &["download", &capture, "-o", dl_dir.to_str().expect("utf-8")],
        )
        .await;
    assert!(
        dl.status.success(),
        "download: {}{}",
        String::from_utf8_lossy(&dl.stdout),
        String::from_utf8_lossy(&dl.stderr)
    );
    let files = pcapng_files(&dl_dir);
    // One file per node before the move, another on node-b after it (2 s rotation).
    assert!(files.len() >= 3, "only {} files: {files:?}", files.len());
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for marker in [
        "before-move-a",
        "before-move-b",
        "after-move-a",
        "after-move-b",
        "not-selected",
    ] {
        for f in &files {
            for (iface, n) in tshark_by_interface(f, marker) {
                *seen.entry((marker.to_string(), iface)).or_insert(0) += n;
            }
        }
    }
    let logging_0 = format!("{APP_NS}/logging-0");
    let logging_1 = format!("{APP_NS}/logging-1");
    let want: BTreeMap<(String, String), usize> = [
        (("after-move-a".to_string(), logging_0.clone()), 30),
        (("after-move-b".to_string(), logging_1.clone()), 30),
        (("before-move-a".to_string(), logging_0), 30),
        (("before-move-b".to_string(), logging_1), 30),
    ]
    .into();
    assert_eq!(seen, want, "per (marker, pod interface) frame counts");

    // The editor may create captures but not read their files: 403 from the gateway.
    let denied = night
        .plugin(
            EDITOR,
            &[
                "download",
                &capture,
                "-o",
                night.dir.path().join("denied").to_str().expect("utf-8"),
            ],
        )
        .await;
    assert_eq!(denied.status.code(), Some(1));
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.starts_with("Error from server (Forbidden): "), "{err}");
    let raw = night
        .http
        .get(format!(
            "{}/v1/namespaces/{APP_NS}/packetcaptures/{capture}/files",
            night.gateway
        ))
        .bearer_auth(format!("{EDITOR}-token"))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(raw.status().as_u16(), 403);

    // The schedule fired at a minute boundary and its capture completed.
    within(
        Duration::from_secs(150),
        "a scheduled capture succeeds",
        || async {
            let list = night.captures().list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|c| {
                    c.labels().get("nightcap.dev/schedule").map(String::as_str)
                        == Some(schedule.name_any().as_str())
                        && c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded)
                })
                .then_some(())
        },
    )
    .await;
}
