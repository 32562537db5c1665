//! FakeKubelet: Job pods as local processes, Job status like the real controller, graceful
//! deletion, garbage collection of a Job's pods.

use std::time::Duration;

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use nightcap_testcluster::{ApiServer, FakeKubelet, KubeletOptions, Policy};
use serde_json::json;

async fn cluster() -> (ApiServer, FakeKubelet, kube::Client) {
    let s = ApiServer::start(Policy::new()).await.expect("server");
    let k = FakeKubelet::start(&s, "node-a", KubeletOptions::default())
        .await
        .expect("kubelet");
    let c = s.admin_client().expect("client");
    (s, k, c)
}

fn job(name: &str, script: &str, extra_spec: serde_json::Value) -> Job {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "nodeName": "node-a",
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main", "image": "ignored.example/nightcap:dev",
                    "command": ["/bin/sh", "-c", script],
                    "env": [
                        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                        {"name": "GREETING", "value": "hello from $(NODE_NAME)"},
                    ],
                }],
            }},
        },
    });
    if let (Some(spec), Some(extra)) = (j["spec"].as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(j).expect("valid job")
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pid a script printed with `echo pid=$$$$` (`$$` is the kubelet's escape for `$`).
fn pid_in(logs: &str) -> i32 {
    let line = logs
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .unwrap_or_else(|| panic!("no pid in {logs:?}"));
    line.trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad pid line {line:?}: {e}"))
}

fn condition(j: &Job, t: &str) -> Option<(String, String)> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test]
async fn job_that_exits_zero_becomes_complete_with_downward_api_env() {
    let (_s, kubelet, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let script =
        "echo \"$GREETING pod=$POD_NAME ns=$POD_NS uid=$POD_UID\"; test -n \"$KUBECONFIG\"";
    jobs.create(&PostParams::default(), &job("ok", script, json!({})))
        .await
        .unwrap();
    let done = wait_for("Complete", || async {
        jobs.get("ok")
            .await
            .ok()
            .filter(|j| condition(j, "Complete").is_some())
    })
    .await;
    let st = done.status.clone().unwrap();
    assert_eq!(
        (st.succeeded, st.failed.unwrap_or(0), st.active.unwrap_or(0)),
        (Some(1), 0, 0)
    );
    assert!(condition(&done, "SuccessCriteriaMet").is_some());
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    let list = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=ok"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let pod = &list.items[0];
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-a")
    );
    let cs = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    let term = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (0, Some("Completed"))
    );
    let logs = kubelet.logs("default", &pod.name_any());
    let want = format!(
        "hello from node-a pod={} ns=default uid={}",
        pod.name_any(),
        pod.uid().unwrap()
    );
    assert!(logs.contains(&want), "logs: {logs:?}, want {want:?}");
    // Counted pods lose the job-tracking finalizer.
    let pod = wait_for("finalizer removed", || async {
        pods.get(&list.items[0].name_any())
            .await
            .ok()
            .filter(|p| p.finalizers().is_empty())
    })
    .await;
    assert!(pod.finalizers().is_empty());
}

#[tokio::test]
async fn job_killed_by_its_deadline_fails_with_deadline_exceeded() {
    let (_s, kubelet, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let script =
        "echo pid=$$$$; trap 'echo got TERM; exit 143' TERM; while true; do sleep 0.1; done";
    jobs.create(
        &PostParams::default(),
        &job("slow", script, json!({"activeDeadlineSeconds": 2})),
    )
    .await
    .unwrap();
    let pod_name = wait_for("pod", || async {
        let list = pods
            .list(&ListParams::default().labels("job-name=slow"))
            .await
            .ok()?;
        list.items.first().map(|p| p.name_any())
    })
    .await;
    let failed = wait_for("Failed", || async {
        jobs.get("slow")
            .await
            .ok()
            .filter(|j| condition(j, "Failed").is_some())
    })
    .await;
    let (reason, message) = condition(&failed, "Failed").unwrap();
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(message, "Job was active longer than specified deadline");
    assert!(condition(&failed, "FailureTarget").is_some());
    assert_eq!(failed.status.as_ref().unwrap().active.unwrap_or(0), 0);
    // The pod was stopped with SIGTERM (the trap ran).
    let logs = wait_for("TERM in log", || async {
        let l = kubelet.logs("default", &pod_name);
        l.contains("got TERM").then_some(l)
    })
    .await;
    let pid = pid_in(&logs);
    wait_for("process gone", || async {
        (nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn failing_job_hits_backoff_limit() {
    let (_s, _k, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("bad", "exit 3", json!({"backoffLimit": 1})),
    )
    .await
    .unwrap();
    let failed = wait_for("Failed", || async {
        jobs.get("bad")
            .await
            .ok()
            .filter(|j| condition(j, "Failed").is_some())
    })
    .await;
    assert_eq!(
        condition(&failed, "Failed").unwrap().0,
        "BackoffLimitExceeded"
    );
    assert_eq!(failed.status.as_ref().unwrap().failed, Some(2));
    let list = pods
        .list(&ListParams::default().labels("job-name=bad"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2);
    for p in list.items {
        let cs = &p
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            3
        );
    }
}

#[tokio::test]
async fn deleting_a_job_in_background_kills_and_collects_its_pods() {
    let (_s, kubelet, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("long", "echo pid=$$$$; exec sleep 300", json!({})),
    )
    .await
    .unwrap();
    let pod = wait_for("running pod", || async {
        let list = pods
            .list(&ListParams::default().labels("job-name=long"))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    let logs = wait_for("pid", || async {
        Some(kubelet.logs("default", &pod.name_any())).filter(|l| l.contains("pid="))
    })
    .await;
    let pid = pid_in(&logs);
    jobs.delete("long", &DeleteParams::background())
        .await
        .unwrap();
    wait_for("pods collected", || async {
        pods.list(&ListParams::default().labels("job-name=long"))
            .await
            .ok()
            .filter(|l| l.items.is_empty())
    })
    .await;
    wait_for("process gone", || async {
        (nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pod_deletion_sends_sigterm_then_sigkill_after_the_grace_period() {
    let (_s, kubelet, client) = cluster().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stubborn"},
        "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "x", "command": ["/bin/sh", "-c",
                "echo pid=$$$$; trap 'echo ignoring TERM' TERM; while true; do sleep 0.1; done"]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let logs = wait_for("pid", || async {
        Some(kubelet.logs("default", "stubborn")).filter(|l| l.contains("pid="))
    })
    .await;
    let pid = pid_in(&logs);
    let running = pods.get("stubborn").await.unwrap();
    assert_eq!(
        running.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(
        running.status.as_ref().unwrap().pod_ip.as_deref(),
        Some("127.0.0.1")
    );
    pods.delete("stubborn", &DeleteParams::default())
        .await
        .unwrap();
    // Graceful: still there with a deletionTimestamp right after the delete.
    let deleting = pods.get_opt("stubborn").await.unwrap();
    assert!(deleting.is_none_or(|p| p.metadata.deletion_timestamp.is_some()));
    wait_for("pod gone", || async {
        pods.get_opt("stubborn").await.ok().filter(Option::is_none)
    })
    .await;
    assert!(
        kubelet
            .logs("default", "stubborn")
            .contains("ignoring TERM")
    );
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "SIGKILL must have ended it"
    );
}
