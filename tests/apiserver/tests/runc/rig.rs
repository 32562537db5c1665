//! The runc-mode rig: a TLS API server, one kubelet in runc mode with the busybox image (and
//! optional extra images), pod builders and waits.

use std::{path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt, api::PostParams};
use nightcap_testcluster::{
    ApiServer, FakeKubelet, KubeletOptions, NetnsSandboxes, Policy, RuncRuntime, Runtime,
    ServerOptions, oci,
};
use serde_json::{Value, json};

pub const IMAGE: &str = "busybox:test";

pub struct Rig {
    pub server: ApiServer,
    pub kubelet: FakeKubelet,
    pub pods: Api<Pod>,
    pub state: PathBuf,
    pub bundle: PathBuf,
    pub _dir: tempfile::TempDir,
}

pub fn unavailable() -> Option<String> {
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

pub async fn rig_with(
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

pub async fn rig() -> Option<Rig> {
    rig_with(false, Policy::new(), &[]).await
}

/// A pod running `script` with `sh -c` (through the image's entrypoint); `spec`/`container`
/// are merged into the pod spec and its container.
pub fn pod(name: &str, script: &str, spec: Value, container: Value) -> Pod {
    let mut c = json!({"name": "main", "image": IMAGE, "args": [script]});
    merge(&mut c, container);
    let mut s = json!({"nodeName": "node-a", "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 10, "containers": [c]});
    merge(&mut s, spec);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": s})).expect("pod")
}

pub fn merge(into: &mut Value, extra: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), extra) {
        a.extend(b);
    }
}

impl Rig {
    pub async fn wait(&self, name: &str, what: &str, f: impl Fn(&Pod) -> bool) -> Pod {
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
    pub async fn run(&self, p: Pod) -> (Pod, String) {
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
    pub async fn output(&self, p: Pod) -> String {
        let (done, logs) = self.run(p).await;
        assert_eq!(phase(&done), "Succeeded", "logs: {logs}");
        logs
    }
}

pub fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

pub fn status_line<'a>(logs: &'a str, key: &str) -> &'a str {
    logs.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} line in {logs:?}"))
}

pub const CAPS: &str = "grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status";

pub fn runc_list(state: &std::path::Path) -> String {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(state.join("runc"))
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A host directory made a shared mount point (unmounted, with what was mounted under it, on
/// drop).
pub struct SharedMount(pub tempfile::TempDir);

impl SharedMount {
    pub fn new() -> Self {
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
