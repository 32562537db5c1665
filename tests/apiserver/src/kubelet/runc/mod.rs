//! runc mode: one foreground `runc run` per container start, from a bundle the kubelet writes
//! into `<pod dir>/containers/<id>/` (`config.json` from [`spec`], the root filesystem an
//! overlay over the image's `rootfs`). Stopping is `runc kill` (TERM, then KILL to every process
//! of the container) and `runc delete --force`; the overlay is unmounted afterwards.
//!
//! Resource limits go to `linux.resources` under the cgroup `/nightcap-kubelet/<node>/<id>`:
//! `limits.memory` → `memory.limit`, `limits.cpu` → CFS quota per 100 ms period. A limit whose
//! cgroup controller this host does not offer is skipped with a warning in the log.

mod seccomp;
mod spec;
mod volumes;

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use serde_json::{Value, json};

use super::{Ctx, container, container::PodView, runtime::RuncRuntime};
use crate::{error::Error, oci::Image};

/// Why a container did not start.
#[derive(Debug)]
pub(crate) enum StartFailure {
    /// Not startable as configured; the container stays Waiting with this reason (no restart).
    Waiting {
        reason: &'static str,
        message: String,
    },
    /// Something failed while starting: a `StartError`, restarted per restartPolicy.
    Error(Error),
}

impl From<Error> for StartFailure {
    fn from(e: Error) -> Self {
        Self::Error(e)
    }
}

/// A created runc container (what stopping and cleaning up need).
#[derive(Debug, Clone)]
pub(crate) struct RuncContainer {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub id: String,
    pub rootfs: PathBuf,
    pub runc_log: PathBuf,
}

impl RuncContainer {
    fn runc(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// `runc kill ID SIGNAL` (`--all`: every process of the container, for KILL).
    pub(crate) fn kill(&self, signal: &str, all: bool) {
        let mut c = self.runc();
        c.arg("kill");
        if all {
            c.arg("--all");
        }
        let _ = c.arg(&self.id).arg(signal).status();
    }

    /// `runc delete --force ID`, then unmount the root filesystem overlay.
    pub(crate) fn delete(&self) {
        let _ = self.runc().args(["delete", "--force", &self.id]).status();
        let _ = nix::mount::umount2(&self.rootfs, nix::mount::MntFlags::MNT_DETACH);
    }

    /// The error runc logged when it failed to start the container, if it did.
    pub(crate) fn start_error(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.runc_log).ok()?;
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["level"] == "error" || v["level"] == "fatal")
            .find_map(|v| v["msg"].as_str().map(str::to_string))
    }
}

/// A started container: the `runc run` process and its container.
pub(crate) struct Started {
    pub child: tokio::process::Child,
    pub container: RuncContainer,
    pub image_id: String,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// The kubelet's own capability bounding set (what `privileged` can hand out).
fn host_capabilities() -> Vec<String> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .unwrap_or(0);
    spec::caps_from_mask(mask)
}

/// A Kubernetes quantity as a number (`500m` = 0.5, `64Mi`, `1G`, `2`).
fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        s => {
            let exp: i32 = s.strip_prefix(['e', 'E'])?.parse().ok()?;
            10f64.powi(exp)
        }
    };
    Some(n * mult)
}

fn controller_available(name: &str) -> bool {
    Path::new("/sys/fs/cgroup").join(name).is_dir()
        || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|s| s.split_whitespace().any(|c| c == name))
}

/// `linux.resources` from the container's limits (skipping unusable controllers, with a log).
fn resources(c: &Container, pod: &str, privileged: bool) -> Value {
    let device_rule = json!([{"allow": privileged, "access": "rwm"}]);
    let mut r = json!({"devices": device_rule});
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    if let Some(mem) = limits
        .and_then(|l| l.get("memory"))
        .and_then(|q| quantity(&q.0))
    {
        if controller_available("memory") {
            r["memory"] = json!({"limit": mem as i64});
        } else {
            tracing::warn!(
                pod,
                "No memory cgroup controller on this host; the memory limit is not applied."
            );
        }
    }
    if let Some(cpu) = limits
        .and_then(|l| l.get("cpu"))
        .and_then(|q| quantity(&q.0))
    {
        if controller_available("cpu") {
            let period: u64 = 100_000;
            let quota = ((cpu * period as f64).ceil() as i64).max(1000);
            r["cpu"] = json!({"quota": quota, "period": period});
        } else {
            tracing::warn!(
                pod,
                "No cpu cgroup controller on this host; the cpu limit is not applied."
            );
        }
    }
    r
}

/// The parent cgroup of a kubelet's containers.
pub(crate) fn cgroup_parent(node: &str) -> String {
    format!("/nightcap-kubelet/{node}")
}

/// Remove a kubelet's (empty) parent cgroups in every hierarchy.
pub(crate) fn remove_cgroups(node: &str) {
    let rel = cgroup_parent(node);
    let rel = rel.trim_start_matches('/');
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .chain([PathBuf::from("/sys/fs/cgroup")]);
    for h in hierarchies {
        let dir = h.join(rel);
        if std::fs::remove_dir(&dir).is_ok()
            && let Some(parent) = dir.parent()
        {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn mount_overlay(lower: &Path, cdir: &Path) -> Result<PathBuf, Error> {
    let (upper, work, merged) = (cdir.join("upper"), cdir.join("work"), cdir.join("rootfs"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| Error::Io {
        what: format!(
            "mounting the root filesystem overlay on {}",
            merged.display()
        ),
        source: e.into(),
    })?;
    Ok(merged)
}

/// Prepare and start container `id` of `pod` (its first container).
pub(crate) async fn start(
    ctx: &Ctx,
    rt: &RuncRuntime,
    pod: &Pod,
    view: &PodView,
    pod_dir: &Path,
    netns: Option<PathBuf>,
    id: &str,
) -> Result<Started, StartFailure> {
    let spec = pod.spec.clone().unwrap_or_default();
    let c = spec
        .containers
        .first()
        .ok_or_else(|| Error::Config("pod has no containers".into()))?;
    let reference = c.image.clone().unwrap_or_default();
    let Some(bundle) = rt.images.get(&reference) else {
        return Err(StartFailure::Waiting {
            reason: "ErrImageNeverPull",
            message: format!(
                "Container image \"{reference}\" is not present with pull policy of Never (present on this fake node: {})",
                rt.images.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        });
    };
    let image = Image::from_bundle(bundle)?;
    let waiting =
        |reason: &'static str| move |message: String| StartFailure::Waiting { reason, message };
    let sec = spec::security(&spec, c, &image, &host_capabilities())
        .map_err(waiting("CreateContainerConfigError"))?;
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let sa = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    let token = ctx.shared.service_account_token(&ns, &sa);
    std::fs::create_dir_all(pod_dir.join("logs"))
        .map_err(io(format!("creating {}", pod_dir.display())))?;
    if let Some(p) = &netns {
        std::fs::write(pod_dir.join("netns"), p.to_string_lossy().as_bytes())
            .map_err(io(format!("writing {}/netns", pod_dir.display())))?;
    }
    let mut kube_env = BTreeMap::from([
        (
            "KUBERNETES_SERVICE_HOST".to_string(),
            "127.0.0.1".to_string(),
        ),
        (
            "KUBERNETES_SERVICE_PORT".to_string(),
            ctx.server_port().to_string(),
        ),
    ]);
    let pod_env = container::environment(&ctx.client, view, c)
        .await
        .map_err(|e| match e {
            Error::Config(m) => waiting("CreateContainerConfigError")(m),
            e => StartFailure::Error(e),
        })?;
    kube_env.extend(pod_env);
    let argv = spec::argv(c, &image, &kube_env).map_err(waiting("CreateContainerError"))?;
    let host_network = spec.host_network == Some(true);
    let mut env: Vec<String> = vec![];
    let mut set = |k: &str, v: &str| {
        env.retain(|e| e.split_once('=').is_none_or(|(ek, _)| ek != k));
        env.push(format!("{k}={v}"));
    };
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(k, v);
    }
    set("HOSTNAME", &name);
    for (k, v) in &kube_env {
        set(k, v);
    }
    let mounts = volumes::mounts(
        &volumes::Env {
            client: &ctx.client,
            pod_dir,
            token: &token,
            ca_pem: ctx.ca_pem.as_deref(),
            pod_ips: &view.pod_ips,
            host_network,
            privileged: sec.privileged,
            read_only_root: sec.read_only_root,
        },
        pod,
        c,
    )
    .await?;
    let cdir = pod_dir.join("containers").join(id);
    let rootfs = mount_overlay(&image.rootfs, &cdir)?;
    let root = ctx.state_dir.join("runc");
    let container = RuncContainer {
        binary: rt.binary.clone(),
        root: root.clone(),
        id: id.to_string(),
        rootfs: rootfs.clone(),
        runc_log: cdir.join("runc.log"),
    };
    let inputs = spec::Inputs {
        argv,
        env,
        cwd: c
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| image.cwd.clone()),
        rootfs,
        hostname: (!host_network).then(|| name.clone()),
        network: netns.map_or(spec::Network::Host, spec::Network::Path),
        host_pid: spec.host_pid == Some(true),
        host_ipc: spec.host_ipc == Some(true),
        mounts: mounts.mounts,
        rootfs_propagation: mounts.rootfs_propagation,
        cgroups_path: format!("{}/{id}", cgroup_parent(&ctx.node)),
        resources: resources(c, &name, sec.privileged),
    };
    let cfg = spec::config(&sec, &inputs);
    let written = serde_json::to_vec_pretty(&cfg)
        .map_err(|e| Error::Config(format!("config.json: {e}")))
        .and_then(|b| {
            std::fs::write(cdir.join("config.json"), b)
                .map_err(io(format!("writing {}/config.json", cdir.display())))
        });
    if let Err(e) = written {
        container.delete();
        return Err(e.into());
    }
    let log_path = pod_dir.join("logs").join(format!("{}.log", c.name));
    let spawned = spawn(&container, &cdir, &log_path);
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            container.delete();
            return Err(e.into());
        }
    };
    Ok(Started {
        child,
        container,
        image_id: image_id(&reference, bundle, &image),
    })
}

fn spawn(c: &RuncContainer, cdir: &Path, log: &Path) -> Result<tokio::process::Child, Error> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(format!("opening log {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io("duplicating the log file".into()))?;
    let mut cmd = tokio::process::Command::new(&c.binary);
    cmd.arg("--root")
        .arg(&c.root)
        .arg("--log")
        .arg(&c.runc_log)
        .args(["--log-format", "json", "run", "--bundle"])
        .arg(cdir)
        .arg(&c.id)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    cmd.spawn()
        .map_err(io(format!("starting {} run", c.binary.display())))
}

/// `REF@sha256:<manifest>` from umoci's record of what it unpacked, else the image
/// configuration digest; empty when neither is known.
fn image_id(reference: &str, bundle: &Path, image: &Image) -> String {
    let repo = reference
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(reference, |(r, _)| r);
    let manifest = std::fs::read_to_string(bundle.join("umoci.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| {
            v["from_descriptor_path"]["descriptor_walk"][0]["digest"]
                .as_str()
                .map(str::to_string)
        });
    match (manifest, &image.digest) {
        (Some(m), _) => format!("{repo}@{m}"),
        (None, Some(config)) => config.clone(),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::quantity;

    #[test]
    fn quantities() {
        let cases = [
            ("500m", 0.5),
            ("2", 2.0),
            ("64Mi", 67_108_864.0),
            ("1G", 1e9),
            ("1.5Gi", 1_610_612_736.0),
            ("128974848", 128_974_848.0),
            ("129e6", 129e6),
        ];
        for (q, want) in cases {
            assert_eq!(quantity(q), Some(want), "{q}");
        }
        assert_eq!(quantity("lots"), None);
    }
}
