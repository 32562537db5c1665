//! Volumes and kubelet-managed files of a runc-mode pod, as runc mount objects: hostPath bind
//! mounts (with `mountPropagation`), emptyDir (a per-pod directory, or tmpfs for
//! `medium: Memory`; `sizeLimit` is not enforced), Secret and ConfigMap volumes (files written
//! into the pod directory, mounted read-only), the service account token at
//! `/var/run/secrets/kubernetes.io/serviceaccount`, and `/etc/hosts`, `/etc/hostname`,
//! `/etc/resolv.conf`.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Volume},
};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::StartFailure;
use crate::error::Error;

/// Where a kubelet projects the service account.
pub(crate) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the mounts need from the kubelet.
pub(crate) struct Env<'a> {
    pub client: &'a kube::Client,
    pub pod_dir: &'a Path,
    pub token: &'a str,
    pub ca_pem: Option<&'a str>,
    pub pod_ips: &'a [String],
    pub host_network: bool,
    pub privileged: bool,
    pub read_only_root: bool,
}

/// The mounts (after runc's standard ones) and the rootfs propagation they need.
pub(crate) struct Mounts {
    pub mounts: Vec<Value>,
    pub rootfs_propagation: Option<&'static str>,
}

fn config(msg: String) -> StartFailure {
    StartFailure::Waiting {
        reason: "CreateContainerConfigError",
        message: msg,
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> StartFailure {
    move |source| StartFailure::Error(Error::Io { what, source })
}

fn bind(dest: &str, source: &Path, ro: bool, propagation: &str) -> Value {
    json!({"destination": dest, "type": "bind", "source": source,
        "options": ["rbind", if ro { "ro" } else { "rw" }, propagation]})
}

fn write_file(dir: &Path, rel: &str, data: &[u8], mode: u32) -> Result<(), StartFailure> {
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|p| p == "..") {
        return Err(config(format!(
            "volume item path {rel:?} must not contain '..'"
        )));
    }
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    std::fs::write(&path, data).map_err(io(format!("writing {}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", path.display())))
}

/// Write key/value files (all keys, or `items`) into a fresh `dir`.
fn project(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    what: &str,
) -> Result<(), StartFailure> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(format!("clearing {}", dir.display())))?;
    }
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let mode = default_mode.unwrap_or(0o644) as u32;
    match items {
        None => {
            for (k, v) in data {
                write_file(dir, k, v, mode)?;
            }
        }
        Some(items) => {
            for it in items {
                let v = data
                    .get(&it.key)
                    .ok_or_else(|| config(format!("{what} has no key {:?}", it.key)))?;
                write_file(dir, &it.path, v, it.mode.map_or(mode, |m| m as u32))?;
            }
        }
    }
    Ok(())
}

async fn volume_source(
    e: &Env<'_>,
    ns: &str,
    v: &Volume,
) -> Result<(PathBuf, Option<Value>), StartFailure> {
    let base = e.pod_dir.join("volumes");
    let kerr = |what: String| move |source| StartFailure::Error(Error::Kube { what, source });
    if let Some(h) = &v.host_path {
        let p = PathBuf::from(&h.path);
        match h.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&p)
                .map_err(io(format!("creating hostPath {}", p.display())))?,
            "FileOrCreate" if !p.exists() => {
                std::fs::write(&p, b"").map_err(io(format!("creating hostPath {}", p.display())))?
            }
            "" | "FileOrCreate" => {}
            t => {
                let m = std::fs::metadata(&p).ok();
                let ok = match t {
                    "Directory" => m.as_ref().is_some_and(|m| m.is_dir()),
                    "File" => m.as_ref().is_some_and(|m| m.is_file()),
                    _ => m.is_some(),
                };
                if !ok {
                    return Err(config(format!(
                        "hostPath type check failed: {} is not a {t}",
                        p.display()
                    )));
                }
            }
        }
        return Ok((p, None));
    }
    if let Some(ed) = &v.empty_dir {
        let p = base.join("empty-dir").join(&v.name);
        if ed.medium.as_deref() == Some("Memory") {
            return Ok((p, Some(json!({"type": "tmpfs", "source": "tmpfs"}))));
        }
        if !p.exists() {
            std::fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
                .map_err(io(format!("chmod {}", p.display())))?;
        }
        return Ok((p, None));
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(e.client.clone(), ns);
        let got = api
            .get_opt(&name)
            .await
            .map_err(kerr(format!("reading secret {ns}/{name}")))?;
        if got.is_none() && s.optional != Some(true) {
            return Err(config(format!("secret \"{name}\" not found")));
        }
        let data: BTreeMap<String, Vec<u8>> = got
            .and_then(|s| s.data)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, ByteString(v))| (k, v))
            .collect();
        let p = base.join("secret").join(&v.name);
        project(
            &p,
            &data,
            s.items.as_ref(),
            s.default_mode,
            &format!("secret {name}"),
        )?;
        return Ok((p, None));
    }
    if let Some(c) = &v.config_map {
        let name = c.name.clone();
        let api: Api<ConfigMap> = Api::namespaced(e.client.clone(), ns);
        let got = api
            .get_opt(&name)
            .await
            .map_err(kerr(format!("reading configmap {ns}/{name}")))?;
        if got.is_none() && c.optional != Some(true) {
            return Err(config(format!("configmap \"{name}\" not found")));
        }
        let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if let Some(cm) = got {
            for (k, s) in cm.data.unwrap_or_default() {
                data.insert(k, s.into_bytes());
            }
            for (k, ByteString(b)) in cm.binary_data.unwrap_or_default() {
                data.insert(k, b);
            }
        }
        let p = base.join("configmap").join(&v.name);
        project(
            &p,
            &data,
            c.items.as_ref(),
            c.default_mode,
            &format!("configmap {name}"),
        )?;
        return Ok((p, None));
    }
    Err(config(format!(
        "volume {:?}: only hostPath, emptyDir, secret and configMap volumes are supported by the fake kubelet",
        v.name
    )))
}

fn etc_files(e: &Env<'_>, pod: &Pod) -> Result<Vec<(String, PathBuf)>, StartFailure> {
    let name = pod.name_any();
    let (hosts, hostname) = if e.host_network {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        (std::fs::read("/etc/hosts").unwrap_or_default(), host)
    } else {
        let mut h =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for ip in e.pod_ips {
            h.push_str(&format!("{ip}\t{name}\n"));
        }
        (h.into_bytes(), name)
    };
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    let mut out = vec![];
    for (dest, file, data) in [
        ("/etc/hosts", "etc-hosts", hosts),
        (
            "/etc/hostname",
            "etc-hostname",
            format!("{hostname}\n").into_bytes(),
        ),
        ("/etc/resolv.conf", "resolv.conf", resolv),
    ] {
        let p = e.pod_dir.join(file);
        std::fs::write(&p, data).map_err(io(format!("writing {}", p.display())))?;
        out.push((dest.to_string(), p));
    }
    Ok(out)
}

/// The container's mounts.
pub(crate) async fn mounts(e: &Env<'_>, pod: &Pod, c: &Container) -> Result<Mounts, StartFailure> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut mounts = vec![];
    let mut propagation: Option<&'static str> = None;
    for vm in c.volume_mounts.iter().flatten() {
        let v = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == vm.name)
            .ok_or_else(|| config(format!("volumeMount {:?}: no such volume", vm.name)))?;
        let (mut source, special) = volume_source(e, &ns, v).await?;
        let ro_volume = v.secret.is_some() || v.config_map.is_some();
        let ro = vm.read_only == Some(true) || ro_volume;
        if let Some(mut m) = special {
            m["destination"] = json!(vm.mount_path);
            m["options"] = json!(["nosuid", "nodev", if ro { "ro" } else { "rw" }]);
            mounts.push(m);
            continue;
        }
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                return Err(config(format!(
                    "subPath {sub:?} must be relative without '..'"
                )));
            }
            source = source.join(sub);
            if !source.exists() {
                std::fs::create_dir_all(&source)
                    .map_err(io(format!("creating subPath {}", source.display())))?;
            }
        }
        let prop = match vm.mount_propagation.as_deref() {
            None | Some("None") => "rprivate",
            Some("HostToContainer") => {
                propagation.get_or_insert("rslave");
                "rslave"
            }
            Some("Bidirectional") if e.privileged => {
                propagation = Some("rshared");
                "rshared"
            }
            Some("Bidirectional") => {
                return Err(config(format!(
                    "volumeMount {:?}: Bidirectional mount propagation is available only to privileged containers",
                    vm.name
                )));
            }
            Some(other) => return Err(config(format!("unknown mountPropagation {other:?}"))),
        };
        mounts.push(bind(&vm.mount_path, &source, ro, prop));
    }
    let sa_mounted = c
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_DIR);
    if spec.automount_service_account_token != Some(false) && !sa_mounted {
        let dir = e.pod_dir.join("volumes").join("serviceaccount");
        let mut data = BTreeMap::from([
            ("token".to_string(), e.token.as_bytes().to_vec()),
            ("namespace".to_string(), ns.clone().into_bytes()),
        ]);
        if let Some(ca) = e.ca_pem {
            data.insert("ca.crt".to_string(), ca.as_bytes().to_vec());
        }
        project(&dir, &data, None, None, "service account")?;
        mounts.push(bind(SERVICE_ACCOUNT_DIR, &dir, true, "rprivate"));
    }
    for (dest, source) in etc_files(e, pod)? {
        mounts.push(bind(&dest, &source, e.read_only_root, "rprivate"));
    }
    Ok(Mounts {
        mounts,
        rootfs_propagation: propagation,
    })
}
