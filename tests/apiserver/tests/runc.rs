//! FakeKubelet in runc mode: pods run as runc containers from a busybox image built here with
//! umoci, with the pod spec translated as a kubelet + containerd would. Needs root, runc, umoci
//! and a static /bin/busybox (skips with a reason otherwise).

use std::{path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};
use nightcap_testcluster::{
    ApiServer, FakeKubelet, KubeletOptions, NetnsSandboxes, Policy, Rule, RuncRuntime, Runtime,
    ServerOptions, oci,
};
use serde_json::{Value, json};

const IMAGE: &str = "busybox:test";

struct Rig {
    server: ApiServer,
    kubelet: FakeKubelet,
    pods: Api<Pod>,
    state: PathBuf,
    bundle: PathBuf,
    _dir: tempfile::TempDir,
}

fn unavailable() -> Option<String> {
    if let Some(why) = RuncRuntime::new().unavailable() {
        return Some(why);
    }
    if std::process::Command::new("umoci")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("umoci is not installed".into());
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox (busybox-static) is not installed".into());
    }
    None
}

async fn rig_with(
    sandboxes: bool,
    policy: Policy,
    extra: &[(&str, oci::ImageSpec)],
) -> Option<Rig> {
    if let Some(why) = unavailable() {
        println!("SKIP: {why}");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = oci::busybox_bundle(&dir.path().join("image")).expect("busybox bundle");
    let server = ApiServer::start_with(
        policy,
        ServerOptions {
            tls: true,
            ..ServerOptions::default()
        },
    )
    .await
    .expect("server");
    let state = dir.path().join("kubelet");
    let mut runtime = RuncRuntime::new().image(IMAGE, &bundle);
    for (i, (reference, spec)) in extra.iter().enumerate() {
        let layout = dir.path().join(format!("layout-{i}"));
        let unpacked = dir.path().join(format!("bundle-{i}"));
        oci::build_layout(&layout, "t", spec).expect("build image");
        oci::unpack(&layout, "t", &unpacked).expect("unpack image");
        runtime = runtime.image(*reference, unpacked);
    }
    let mut opts = KubeletOptions {
        state_dir: Some(state.clone()),
        runtime: Runtime::Runc(runtime),
        accept_unpinned: true,
        ..KubeletOptions::default()
    };
    if sandboxes {
        opts.sandboxes = Some(Arc::new(NetnsSandboxes {
            prefix: Some("tcrunc".into()),
        }));
    }
    let kubelet = FakeKubelet::start(&server, "node-a", opts)
        .await
        .expect("kubelet");
    let pods = Api::namespaced(server.admin_client().expect("client"), "default");
    Some(Rig {
        server,
        kubelet,
        pods,
        state,
        bundle,
        _dir: dir,
    })
}

async fn rig() -> Option<Rig> {
    rig_with(false, Policy::new(), &[]).await
}

/// A pod running `script` with `sh -c` (through the image's entrypoint); `spec`/`container`
/// are merged into the pod spec and its container.
fn pod(name: &str, script: &str, spec: Value, container: Value) -> Pod {
    let mut c = json!({"name": "main", "image": IMAGE, "args": [script]});
    merge(&mut c, container);
    let mut s = json!({"nodeName": "node-a", "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 10, "containers": [c]});
    merge(&mut s, spec);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": s})).expect("pod")
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), extra) {
        a.extend(b);
    }
}

impl Rig {
    async fn wait(&self, name: &str, what: &str, f: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(p) = self.pods.get_opt(name).await.expect("reading pod")
                && f(&p)
            {
                return p;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {name} to be {what}; logs: {}",
                self.kubelet.logs("default", name)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Run the pod to completion; its final phase and logs.
    async fn run(&self, p: Pod) -> (Pod, String) {
        let name = p.name_any();
        self.pods
            .create(&PostParams::default(), &p)
            .await
            .expect("create pod");
        let done = self
            .wait(&name, "finished", |p| {
                matches!(phase(p).as_str(), "Succeeded" | "Failed")
            })
            .await;
        (done, self.kubelet.logs("default", &name))
    }

    /// Run the pod, expecting it to succeed; its logs.
    async fn output(&self, p: Pod) -> String {
        let (done, logs) = self.run(p).await;
        assert_eq!(phase(&done), "Succeeded", "logs: {logs}");
        logs
    }
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn status_line<'a>(logs: &'a str, key: &str) -> &'a str {
    logs.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} line in {logs:?}"))
}

const CAPS: &str = "grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status";

#[tokio::test]
async fn drop_all_add_net_raw_is_exactly_net_raw() {
    let Some(r) = rig().await else { return };
    let sc = json!({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}}});
    let logs = r.output(pod("netraw", CAPS, json!({}), sc)).await;
    assert_eq!(status_line(&logs, "CapEff:"), "0000000000002000", "{logs}");
    assert_eq!(status_line(&logs, "CapBnd:"), "0000000000002000", "{logs}");
    assert_eq!(status_line(&logs, "CapPrm:"), "0000000000002000", "{logs}");
}

#[tokio::test]
async fn no_drop_gives_the_default_set_and_no_seccomp() {
    let Some(r) = rig().await else { return };
    let logs = r.output(pod("defaults", CAPS, json!({}), json!({}))).await;
    // chown, dac_override, fowner, fsetid, kill, setgid, setuid, setpcap, net_bind_service,
    // net_raw, sys_chroot, mknod, audit_write, setfcap
    assert_eq!(status_line(&logs, "CapEff:"), "00000000a80425fb", "{logs}");
    assert_eq!(status_line(&logs, "CapBnd:"), "00000000a80425fb", "{logs}");
    assert_eq!(status_line(&logs, "NoNewPrivs:"), "0", "{logs}");
    assert_eq!(status_line(&logs, "Seccomp:"), "0", "{logs}");
}

#[tokio::test]
async fn read_only_root_allows_only_volume_writes_and_the_image_stays_untouched() {
    let Some(r) = rig().await else { return };
    let script = "touch /root-file && echo root-writable; touch /scratch/f && echo scratch-ok";
    let c = json!({"securityContext": {"readOnlyRootFilesystem": true},
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]});
    let spec = json!({"volumes": [{"name": "scratch", "emptyDir": {}}]});
    let logs = r.output(pod("ro", script, spec.clone(), c)).await;
    assert!(logs.contains("scratch-ok"), "{logs}");
    assert!(!logs.contains("root-writable"), "{logs}");
    assert!(logs.contains("Read-only file system"), "{logs}");
    // Writable root: the write lands in the container's own layer, not in the image.
    let logs = r
        .output(pod(
            "rw",
            script,
            spec,
            json!({"volumeMounts": [
            {"name": "scratch", "mountPath": "/scratch"}]}),
        ))
        .await;
    assert!(logs.contains("root-writable"), "{logs}");
    assert!(!r.bundle.join("rootfs/root-file").exists());
    assert!(!r.bundle.join("rootfs/scratch").exists());
}

#[tokio::test]
async fn run_as_user_and_group_without_capabilities() {
    let Some(r) = rig().await else { return };
    let spec = json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 1000,
        "supplementalGroups": [2000]}});
    let logs = r
        .output(pod("user", &format!("id; {CAPS}"), spec, json!({})))
        .await;
    assert!(logs.contains("uid=1000 gid=1000"), "{logs}");
    assert!(logs.contains("2000"), "{logs}");
    assert_eq!(status_line(&logs, "CapEff:"), "0000000000000000", "{logs}");
    // The container level wins over the pod level.
    let spec = json!({"securityContext": {"runAsUser": 1000}});
    let c = json!({"securityContext": {"runAsUser": 1001}});
    let logs = r.output(pod("user2", "id -u", spec, c)).await;
    assert_eq!(logs.trim(), "1001");
}

#[tokio::test]
async fn allow_privilege_escalation_false_sets_no_new_privs() {
    let Some(r) = rig().await else { return };
    let c = json!({"securityContext": {"allowPrivilegeEscalation": false}});
    let logs = r.output(pod("nnp", CAPS, json!({}), c)).await;
    assert_eq!(status_line(&logs, "NoNewPrivs:"), "1", "{logs}");
}

#[tokio::test]
async fn runtime_default_seccomp_refuses_namespaces_without_sys_admin() {
    let Some(r) = rig().await else { return };
    let script = format!(
        "{CAPS}; unshare -n true && echo netns-ok || echo netns-refused; \
         unshare -U true && echo userns-ok || echo userns-refused"
    );
    let seccomp = json!({"seccompProfile": {"type": "RuntimeDefault"}});
    let logs = r
        .output(pod(
            "sc-default",
            &script,
            json!({"securityContext": seccomp}),
            json!({}),
        ))
        .await;
    assert_eq!(status_line(&logs, "Seccomp:"), "2", "{logs}");
    assert!(logs.contains("netns-refused"), "{logs}");
    assert!(logs.contains("Operation not permitted"), "{logs}");
    // A user namespace needs no capability: only the profile refuses it.
    assert!(logs.contains("userns-refused"), "{logs}");
    let c = json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}});
    let logs = r
        .output(pod(
            "sc-admin",
            &script,
            json!({"securityContext": seccomp}),
            c,
        ))
        .await;
    assert_eq!(status_line(&logs, "Seccomp:"), "2", "{logs}");
    assert!(logs.contains("netns-ok"), "{logs}");
    let unconfined = json!({"seccompProfile": {"type": "Unconfined"}});
    let logs = r
        .output(pod(
            "sc-none",
            &script,
            json!({"securityContext": unconfined}),
            json!({}),
        ))
        .await;
    assert_eq!(status_line(&logs, "Seccomp:"), "0", "{logs}");
    assert!(logs.contains("userns-ok"), "{logs}");
}

#[tokio::test]
async fn privileged_gets_every_capability_no_seccomp_and_writable_sys() {
    let Some(r) = rig().await else { return };
    let script = format!("{CAPS}; grep ' /sys sysfs' /proc/mounts");
    let c = json!({"securityContext": {"privileged": true,
        "seccompProfile": {"type": "RuntimeDefault"}}});
    let logs = r.output(pod("priv", &script, json!({}), c)).await;
    let own = std::fs::read_to_string("/proc/self/status").expect("status");
    assert_eq!(
        status_line(&logs, "CapEff:"),
        status_line(&own, "CapBnd:"),
        "{logs}"
    );
    assert_eq!(status_line(&logs, "Seccomp:"), "0", "{logs}");
    assert!(logs.contains("sysfs rw"), "{logs}");
    let logs = r.output(pod("unpriv", &script, json!({}), json!({}))).await;
    assert!(logs.contains("sysfs ro"), "{logs}");
}

#[tokio::test]
async fn host_pid_shows_the_hosts_processes() {
    let Some(r) = rig().await else { return };
    let me = std::process::id();
    let script = format!("echo pid=$$$$; test -d /proc/{me} && echo sees-host || echo own-only");
    let logs = r
        .output(pod("hostpid", &script, json!({"hostPID": true}), json!({})))
        .await;
    assert!(logs.contains("sees-host"), "{logs}");
    assert!(!logs.contains("pid=1\n"), "{logs}");
    let logs = r.output(pod("ownpid", &script, json!({}), json!({}))).await;
    assert!(
        logs.contains("own-only") && logs.contains("pid=1\n"),
        "{logs}"
    );
}

#[tokio::test]
async fn host_path_secret_volume_and_env_are_visible() {
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
    let script = "cat /host/data; echo; touch /host/new || echo host-ro; \
                  echo secret-file=$(cat /creds/password); echo env=$PASSWORD pod=$POD_NAME";
    let spec = json!({"volumes": [
        {"name": "host", "hostPath": {"path": host.path(), "type": "Directory"}},
        {"name": "creds", "secret": {"secretName": "creds"}}]});
    let c = json!({
        "volumeMounts": [{"name": "host", "mountPath": "/host", "readOnly": true},
                         {"name": "creds", "mountPath": "/creds"}],
        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]});
    let logs = r.output(pod("vols", script, spec, c)).await;
    assert!(logs.contains("from-the-host"), "{logs}");
    assert!(logs.contains("host-ro"), "{logs}");
    assert!(!host.path().join("new").exists());
    assert!(logs.contains("secret-file=s3cret"), "{logs}");
    assert!(logs.contains("env=s3cret pod=vols"), "{logs}");
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

fn runc_list(state: &std::path::Path) -> String {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(state.join("runc"))
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// A host directory made a shared mount point (unmounted, with what was mounted under it, on
/// drop).
struct SharedMount(tempfile::TempDir);

impl SharedMount {
    fn new() -> Self {
        use nix::mount::{MsFlags, mount};
        let dir = tempfile::tempdir().expect("tempdir");
        mount(
            Some(dir.path()),
            dir.path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind mount");
        mount(
            None::<&str>,
            dir.path(),
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("make shared");
        Self(dir)
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0.path().join("sub"), nix::mount::MntFlags::MNT_DETACH);
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
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
