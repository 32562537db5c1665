//! Volumes, service account, images, exit codes, restarts, deletion, Drop, Jobs, limits and
//! sandboxes.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ConfigMap, Secret},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};
use nightcap_testcluster::{Policy, Rule, oci};
use serde_json::json;

use crate::rig::*;

#[tokio::test]
async fn host_path_secret_config_map_memory_volumes_and_env_are_visible() {
    let Some(r) = rig().await else { return };
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("data"), "from-the-host").expect("write");
    let secrets: Api<Secret> = Api::namespaced(r.server.admin_client().expect("client"), "default");
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "creds"},
        "data": {"password": "czNjcmV0"}}))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let cms: Api<ConfigMap> = Api::namespaced(r.server.admin_client().expect("client"), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "settings"},
        "data": {"level": "debug", "unused": "x"}}))
    .expect("configmap");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    let script = "cat /host/data; echo; touch /host/new || echo host-ro; \
                  echo secret-file=$(cat /creds/password); echo env=$PASSWORD pod=$POD_NAME; \
                  echo cm=$(cat /etc/app/conf/level); ls /etc/app/conf; touch /etc/app/x || echo cm-ro; \
                  grep ' /fast ' /proc/mounts";
    let spec = json!({"volumes": [
        {"name": "host", "hostPath": {"path": host.path(), "type": "Directory"}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "settings", "configMap": {"name": "settings",
            "items": [{"key": "level", "path": "conf/level"}]}},
        {"name": "fast", "emptyDir": {"medium": "Memory"}}]});
    let c = json!({
        "volumeMounts": [{"name": "host", "mountPath": "/host", "readOnly": true},
                         {"name": "creds", "mountPath": "/creds"},
                         {"name": "settings", "mountPath": "/etc/app"},
                         {"name": "fast", "mountPath": "/fast"}],
        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]});
    let logs = r.output(pod("vols", script, spec, c)).await;
    assert!(logs.contains("from-the-host"), "{logs}");
    assert!(logs.contains("host-ro"), "{logs}");
    assert!(!host.path().join("new").exists());
    assert!(logs.contains("secret-file=s3cret"), "{logs}");
    assert!(logs.contains("env=s3cret pod=vols"), "{logs}");
    assert!(
        logs.contains("cm=debug\nlevel\n") && logs.contains("cm-ro"),
        "{logs}"
    );
    assert!(logs.contains("tmpfs /fast tmpfs rw"), "{logs}");
}

#[tokio::test]
async fn service_account_token_is_projected_unless_automount_is_off() {
    let Some(r) = rig().await else { return };
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let script = format!(
        "echo token=$(cat {dir}/token); echo ns=$(cat {dir}/namespace); \
         grep -q 'BEGIN CERTIFICATE' {dir}/ca.crt && echo ca-ok; \
         echo api=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; cat /etc/hostname"
    );
    let spec = json!({"serviceAccountName": "capture"});
    let logs = r.output(pod("sa", &script, spec, json!({}))).await;
    let token = r.server.service_account_token("default", "capture");
    assert!(logs.contains(&format!("token={token}\n")), "{logs}");
    assert!(
        logs.contains("ns=default") && logs.contains("ca-ok"),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("api=127.0.0.1:{}", r.server.port())),
        "{logs}"
    );
    assert!(logs.contains("\nsa\n"), "hostname is the pod name: {logs}");
    let spec = json!({"automountServiceAccountToken": false});
    let script = format!("test -e {dir}/token && echo mounted || echo absent");
    let logs = r.output(pod("no-sa", &script, spec, json!({}))).await;
    assert!(logs.contains("absent"), "{logs}");
}

#[tokio::test]
async fn exit_codes_become_phases_with_runc_container_ids() {
    let Some(r) = rig().await else { return };
    let (failed, _) = r.run(pod("fails", "exit 3", json!({}), json!({}))).await;
    assert_eq!(phase(&failed), "Failed");
    let cs = &failed
        .status
        .as_ref()
        .expect("status")
        .container_statuses
        .as_ref()
        .expect("cs")[0];
    let term = cs
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!((term.exit_code, term.reason.as_deref()), (3, Some("Error")));
    let id = cs.container_id.as_deref().unwrap_or_default();
    assert!(id.starts_with("runc://"), "{id}");
    assert!(
        cs.image_id.starts_with("busybox@sha256:"),
        "{}",
        cs.image_id
    );
    let (ok, _) = r.run(pod("succeeds", "exit 0", json!({}), json!({}))).await;
    assert_eq!(phase(&ok), "Succeeded");
}

#[tokio::test]
async fn deletion_sends_term_to_the_container_and_removes_it() {
    let Some(r) = rig().await else { return };
    let script = "trap 'echo got-term; exit 0' TERM; echo ready; sleep 1000 & wait";
    r.pods
        .create(
            &PostParams::default(),
            &pod("term", script, json!({}), json!({})),
        )
        .await
        .expect("create");
    r.wait("term", "running", |p| phase(p) == "Running").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !r.kubelet.logs("default", "term").contains("ready") {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!runc_list(&r.state).trim().is_empty(), "container listed");
    r.pods
        .delete("term", &DeleteParams::default())
        .await
        .expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while r.pods.get_opt("term").await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod never went away"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(r.kubelet.logs("default", "term").contains("got-term"));
    assert_eq!(runc_list(&r.state).trim(), "", "container deleted");
}

#[tokio::test]
async fn dropping_the_kubelet_kills_and_deletes_its_containers() {
    let Some(r) = rig().await else { return };
    r.pods
        .create(
            &PostParams::default(),
            &pod("forever", "sleep 1000", json!({}), json!({})),
        )
        .await
        .expect("create");
    r.wait("forever", "running", |p| phase(p) == "Running")
        .await;
    assert!(!runc_list(&r.state).trim().is_empty());
    let state = r.state.clone();
    drop(r.kubelet);
    assert_eq!(runc_list(&state).trim(), "", "containers deleted on drop");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&state.to_string_lossy().into_owned()),
        "overlays unmounted"
    );
}

#[tokio::test]
async fn a_job_runs_through_runc_to_completion() {
    let Some(r) = rig().await else { return };
    let jobs: Api<Job> = Api::namespaced(r.server.admin_client().expect("client"), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "batch"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": IMAGE,
                "command": ["/bin/sh", "-c", "grep CapEff /proc/self/status"],
                "securityContext": {"capabilities": {"drop": ["ALL"]}}}]}}}}))
    .expect("job");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create job");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let j = jobs.get("batch").await.expect("job");
        if j.status.as_ref().and_then(|s| s.succeeded) == Some(1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods = r.pods.list(&Default::default()).await.expect("pods");
    let p = pods.items.first().expect("job pod");
    let cs = &p
        .status
        .as_ref()
        .expect("status")
        .container_statuses
        .as_ref()
        .expect("cs")[0];
    assert!(
        cs.container_id
            .as_deref()
            .unwrap_or_default()
            .starts_with("runc://")
    );
    let logs = r.kubelet.logs("default", &p.name_any());
    assert!(logs.contains("0000000000000000"), "{logs}");
}

#[tokio::test]
async fn an_image_that_is_not_present_is_err_image_never_pull() {
    let Some(r) = rig().await else { return };
    let p = pod(
        "absent",
        "true",
        json!({}),
        json!({"image": "ghcr.io/example/nope:1"}),
    );
    r.pods
        .create(&PostParams::default(), &p)
        .await
        .expect("create");
    let p = r
        .wait("absent", "waiting", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c[0].state.as_ref()?.waiting.as_ref()?.reason.clone())
                .is_some()
        })
        .await;
    let cs = &p
        .status
        .as_ref()
        .expect("status")
        .container_statuses
        .as_ref()
        .expect("cs")[0];
    let w = cs
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .expect("waiting");
    assert_eq!(w.reason.as_deref(), Some("ErrImageNeverPull"));
    assert!(
        w.message
            .as_deref()
            .unwrap_or_default()
            .contains("ghcr.io/example/nope:1"),
        "{w:?}"
    );
    assert_eq!(phase(&p), "Pending");
}

#[tokio::test]
async fn memory_and_cpu_limits_reach_the_cgroup() {
    let Some(r) = rig().await else { return };
    if !std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        println!("SKIP: no cgroup v1 memory hierarchy on this host");
        return;
    }
    let script =
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us";
    let c = json!({"resources": {"limits": {"memory": "64Mi", "cpu": "250m"}}});
    let logs = r.output(pod("limits", script, json!({}), c)).await;
    assert!(
        logs.contains("67108864") && logs.contains("25000"),
        "{logs}"
    );
}

#[tokio::test]
async fn sandboxed_pods_join_the_sandbox_network_namespace() {
    let Some(r) = rig_with(true, Policy::new(), &[]).await else {
        return;
    };
    let script = "readlink /proc/self/ns/net; cat /etc/hosts";
    let logs = r.output(pod("netns", script, json!({}), json!({}))).await;
    let path = r
        .kubelet
        .netns_path("default", "netns")
        .expect("sandbox netns");
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&path).expect("netns").ino();
    assert!(logs.contains(&format!("net:[{ino}]")), "{logs}");
    assert!(
        logs.contains("10.200."),
        "/etc/hosts names the pod IP: {logs}"
    );
}

#[tokio::test]
async fn a_sandboxed_pod_reaches_the_api_in_cluster_as_its_service_account() {
    let Ok(kubectl) = std::fs::canonicalize("/usr/bin/kubectl") else {
        println!("SKIP: no /usr/bin/kubectl (a static binary the container can run)");
        return;
    };
    let rules = vec![Rule::new(["get", "list"], [""], ["pods"])];
    let policy = Policy::new().service_account("default", "reader", rules);
    let Some(r) = rig_with(true, policy, &[]).await else {
        return;
    };
    let spec = json!({"serviceAccountName": "reader", "volumes": [
        {"name": "kubectl", "hostPath": {"path": kubectl, "type": "File"}}]});
    let c = json!({"env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [{"name": "kubectl", "mountPath": "/bin/kubectl", "readOnly": true}]});
    let script = "kubectl get pods -o name; kubectl get secrets 2>&1; true";
    let logs = r.output(pod("incluster", script, spec, c)).await;
    assert!(logs.contains("pod/incluster"), "{logs}");
    assert!(
        logs.contains("system:serviceaccount:default:reader") && logs.contains("forbidden"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_restart_gets_a_fresh_container_and_a_missing_binary_is_a_start_error() {
    let Some(r) = rig().await else { return };
    let script = "test -f /state/once && exit 0; touch /state/once; exit 1";
    let spec =
        json!({"restartPolicy": "OnFailure", "volumes": [{"name": "state", "emptyDir": {}}]});
    let c = json!({"volumeMounts": [{"name": "state", "mountPath": "/state"}]});
    let (done, logs) = r.run(pod("again", script, spec, c)).await;
    assert_eq!(phase(&done), "Succeeded", "{logs}");
    let cs = &done
        .status
        .as_ref()
        .expect("status")
        .container_statuses
        .as_ref()
        .expect("cs")[0];
    assert_eq!(cs.restart_count, 1);
    let id = cs.container_id.as_deref().unwrap_or_default();
    assert!(id.starts_with("runc://") && id.ends_with("-2"), "{id}");
    let c = json!({"command": ["/bin/not-there"]});
    let (failed, logs) = r.run(pod("nobin", "", json!({}), c)).await;
    assert_eq!(phase(&failed), "Failed", "{logs}");
    let cs = &failed
        .status
        .as_ref()
        .expect("status")
        .container_statuses
        .as_ref()
        .expect("cs")[0];
    let term = cs
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (128, Some("StartError"))
    );
    assert!(
        term.message
            .as_deref()
            .unwrap_or_default()
            .contains("not-there"),
        "{term:?}"
    );
}

#[tokio::test]
async fn host_to_container_propagation_shows_mounts_made_after_the_start() {
    let Some(r) = rig().await else { return };
    let host = SharedMount::new();
    let script =
        "echo ready; while ! test -f /host/sub/marker; do sleep 0.1; done; cat /host/sub/marker";
    let spec = json!({"volumes": [{"name": "host", "hostPath": {"path": host.0.path()}}]});
    let c = json!({"volumeMounts": [{"name": "host", "mountPath": "/host", "readOnly": true,
        "mountPropagation": "HostToContainer"}]});
    r.pods
        .create(&PostParams::default(), &pod("prop", script, spec, c))
        .await
        .expect("create");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !r.kubelet.logs("default", "prop").contains("ready") {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sub = host.0.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount tmpfs");
    std::fs::write(sub.join("marker"), "propagated").expect("marker");
    let done = r
        .wait("prop", "finished", |p| phase(p) == "Succeeded")
        .await;
    assert_eq!(phase(&done), "Succeeded");
    assert!(r.kubelet.logs("default", "prop").contains("propagated"));
}

#[tokio::test]
async fn host_binaries_run_from_their_image_with_its_entrypoint_cmd_env_and_user() {
    let files: Vec<(PathBuf, PathBuf)> = ["/usr/bin/env", "/usr/bin/id"]
        .iter()
        .map(|p| (PathBuf::from(p), PathBuf::from(p)))
        .collect();
    let spec = oci::ImageSpec {
        files,
        shared_libraries: true,
        entrypoint: vec!["/usr/bin/env".into()],
        cmd: vec!["/usr/bin/id".into()],
        env: vec![
            "PATH=/usr/bin".into(),
            "FROM_IMAGE=image".into(),
            "KEEP=image".into(),
        ],
        user: Some("4242:4242".into()),
        ..oci::ImageSpec::default()
    };
    let Some(r) = rig_with(false, Policy::new(), &[("tools:1", spec)]).await else {
        return;
    };
    let image = json!({"image": "tools:1"});
    // Neither command nor args: the image's entrypoint + cmd, as the image user.
    let mut c = image.clone();
    merge(&mut c, json!({"args": null}));
    let logs = r.output(pod("tools-id", "", json!({}), c)).await;
    assert!(
        logs.contains("uid=4242") && logs.contains("gid=4242"),
        "{logs}"
    );
    // args replace only the cmd; pod env overrides the image's.
    let mut c = image;
    merge(
        &mut c,
        json!({"args": ["-u", "NOTHING"],
        "env": [{"name": "FROM_IMAGE", "value": "pod"}]}),
    );
    let logs = r.output(pod("tools-env", "", json!({}), c)).await;
    for want in [
        "FROM_IMAGE=pod",
        "KEEP=image",
        "PATH=/usr/bin",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "HOSTNAME=tools-env",
    ] {
        assert!(logs.lines().any(|l| l == want), "{want} in {logs}");
    }
}
