//! Process mode: running a pod's first container as a local process: argv from `command` + `args` (the image
//! is ignored), environment with the downward API, Secret/ConfigMap references and `$(VAR)`
//! expansion, its own process group, optionally inside the pod sandbox's network namespace.

use std::{
    collections::BTreeMap,
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Stdio,
};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::Ctx;
use crate::error::{Error, Result};

/// What the container process sees of its pod.
#[derive(Debug, Clone)]
pub(crate) struct PodView {
    pub pod: Value,
    pub pod_ips: Vec<String>,
    pub host_ip: String,
}

fn field_ref(view: &PodView, path: &str) -> Option<String> {
    let pod = &view.pod;
    let quoted = |prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        let map = if prefix.starts_with("metadata.labels") {
            "labels"
        } else {
            "annotations"
        };
        pod["metadata"][map][key].as_str().map(str::to_string)
    };
    Some(match path {
        "metadata.name" | "metadata.namespace" | "metadata.uid" => pod["metadata"]
            [path.trim_start_matches("metadata.")]
        .as_str()?
        .to_string(),
        "spec.nodeName" => pod["spec"]["nodeName"].as_str()?.to_string(),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        "status.podIP" => view.pod_ips.first()?.clone(),
        "status.podIPs" => view.pod_ips.join(","),
        "status.hostIP" => view.host_ip.clone(),
        "status.hostIPs" => view.host_ip.clone(),
        p if p.starts_with("metadata.labels['") => quoted("metadata.labels['")?,
        p if p.starts_with("metadata.annotations['") => quoted("metadata.annotations['")?,
        _ => return None,
    })
}

/// Expand `$(NAME)` references like the kubelet (`$$(NAME)` escapes; unknown names stay).
pub(crate) fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(end) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..3 + end]),
            }
            rest = &tail[3 + end..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

async fn secret_value(
    client: &kube::Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = api.get_opt(name).await.map_err(|source| Error::Kube {
        what: format!("reading secret {ns}/{name}"),
        source,
    })?;
    Ok(s.and_then(|s| s.data).and_then(|d| {
        d.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    }))
}

async fn config_map_value(
    client: &kube::Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let c = api.get_opt(name).await.map_err(|source| Error::Kube {
        what: format!("reading configmap {ns}/{name}"),
        source,
    })?;
    Ok(c.and_then(|c| c.data).and_then(|d| d.get(key).cloned()))
}

async fn env_value(
    client: &kube::Client,
    ns: &str,
    view: &PodView,
    c: &Container,
    e: &EnvVar,
    env: &BTreeMap<String, String>,
) -> Result<Option<String>> {
    if let Some(v) = &e.value {
        return Ok(Some(expand(v, env)));
    }
    let Some(from) = &e.value_from else {
        return Ok(Some(String::new()));
    };
    if let Some(f) = &from.field_ref {
        return field_ref(view, &f.field_path).map(Some).ok_or_else(|| {
            Error::Config(format!(
                "env {}: unsupported or empty fieldRef {:?}",
                e.name, f.field_path
            ))
        });
    }
    if let Some(s) = &from.secret_key_ref {
        let v = secret_value(client, ns, &s.name, &s.key).await?;
        if v.is_none() && s.optional != Some(true) {
            return Err(Error::Config(format!(
                "env {}: secret {ns}/{} has no key {:?}",
                e.name, s.name, s.key
            )));
        }
        return Ok(v);
    }
    if let Some(cm) = &from.config_map_key_ref {
        let v = config_map_value(client, ns, &cm.name, &cm.key).await?;
        if v.is_none() && cm.optional != Some(true) {
            return Err(Error::Config(format!(
                "env {}: configmap {ns}/{} has no key {:?}",
                e.name, cm.name, cm.key
            )));
        }
        return Ok(v);
    }
    if let Some(r) = &from.resource_field_ref {
        let res = c.resources.as_ref();
        let pick = |m: Option<
            &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >,
                    k: &str| { m.and_then(|m| m.get(k)).map(|q| q.0.clone()) };
        let v = match r.resource.split_once('.') {
            Some(("limits", k)) => pick(res.and_then(|r| r.limits.as_ref()), k),
            Some(("requests", k)) => pick(res.and_then(|r| r.requests.as_ref()), k),
            _ => None,
        };
        return Ok(Some(v.unwrap_or_else(|| "0".into())));
    }
    Ok(Some(String::new()))
}

/// The container's environment, in Kubernetes order (envFrom, then env; later wins).
pub(crate) async fn environment(
    client: &kube::Client,
    view: &PodView,
    c: &Container,
) -> Result<BTreeMap<String, String>> {
    let ns = view.pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let mut env = BTreeMap::new();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(s) = &from.secret_ref {
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            if let Some(data) = api
                .get_opt(&s.name)
                .await
                .map_err(|source| Error::Kube {
                    what: format!("reading secret {ns}/{}", s.name),
                    source,
                })?
                .and_then(|s| s.data)
            {
                for (k, v) in data {
                    env.insert(
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v.0).into_owned(),
                    );
                }
            }
        }
        if let Some(cm) = &from.config_map_ref {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            if let Some(data) = api
                .get_opt(&cm.name)
                .await
                .map_err(|source| Error::Kube {
                    what: format!("reading configmap {ns}/{}", cm.name),
                    source,
                })?
                .and_then(|c| c.data)
            {
                for (k, v) in data {
                    env.insert(format!("{prefix}{k}"), v);
                }
            }
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = env_value(client, &ns, view, c, e, &env).await? {
            env.insert(e.name.clone(), v);
        }
    }
    Ok(env)
}

/// How to start one container process.
#[derive(Debug)]
pub(crate) struct Launch {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
    pub log: PathBuf,
    pub netns: Option<PathBuf>,
}

/// Resolve argv[0]: absolute paths as given, known names through `binaries`, else `PATH`.
pub(crate) fn resolve_binary(name: &str, binaries: &BTreeMap<String, PathBuf>) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    if let Some(p) = binaries.get(name) {
        return p.clone();
    }
    let base = Path::new(name)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or(name);
    binaries
        .get(base)
        .cloned()
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Build argv from the container (command + args, `$(VAR)`-expanded).
pub(crate) fn argv(
    pod: &Pod,
    env: &BTreeMap<String, String>,
    binaries: &BTreeMap<String, PathBuf>,
) -> Result<Vec<String>> {
    let c = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .ok_or_else(|| Error::Config("pod has no containers".into()))?;
    let mut argv: Vec<String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(|a| expand(a, env))
        .collect();
    if c.command.as_ref().is_none_or(Vec::is_empty) {
        return Err(Error::Config(format!(
            "container {:?} has no command: the fake kubelet ignores images, so spec.containers[0].command must \
             name the binary to run",
            c.name
        )));
    }
    argv[0] = resolve_binary(&argv[0], binaries)
        .to_string_lossy()
        .into_owned();
    Ok(argv)
}

/// Start the process (own process group; inside `netns` when given).
pub(crate) fn spawn(l: &Launch) -> Result<tokio::process::Child> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(&l.log)
        .map_err(|source| Error::Io {
            what: format!("opening log {}", l.log.display()),
            source,
        })?;
    let log2 = log.try_clone().map_err(|source| Error::Io {
        what: "duplicating the log file".into(),
        source,
    })?;
    let mut cmd = std::process::Command::new(&l.argv[0]);
    cmd.args(&l.argv[1..])
        .env_clear()
        .envs(&l.env)
        .current_dir(&l.workdir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    if let Some(ns) = &l.netns {
        let f = File::open(ns).map_err(|source| Error::Io {
            what: format!("opening netns {}", ns.display()),
            source,
        })?;
        let fd = f.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls are made (setns); the file
        // stays open because `f` lives until `spawn` returns, after the child has exec'd.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = tokio::process::Command::from(cmd).spawn();
        drop(f);
        return child.map_err(|source| Error::Io {
            what: format!("starting {}", l.argv[0]),
            source,
        });
    }
    tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|source| Error::Io {
            what: format!("starting {}", l.argv[0]),
            source,
        })
}

/// Everything a process-mode container needs: pod directory, kubeconfig, environment, argv.
pub(crate) async fn prepare(
    ctx: &Ctx,
    pod: &Pod,
    view: &PodView,
    dir: &Path,
    netns: Option<PathBuf>,
) -> crate::Result<Launch> {
    let c = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .ok_or_else(|| crate::Error::Config("pod has no containers".into()))?;
    std::fs::create_dir_all(dir.join("logs")).map_err(|source| crate::Error::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let token = ctx.shared.service_account_token(&ns, &sa);
    if let Some(ns_path) = &netns {
        std::fs::write(dir.join("netns"), ns_path.to_string_lossy().as_bytes()).map_err(
            |source| crate::Error::Io {
                what: format!("writing {}/netns", dir.display()),
                source,
            },
        )?;
    }
    let kubeconfig = dir.join("kubeconfig");
    write_kubeconfig(
        &kubeconfig,
        &ctx.server_url,
        ctx.ca_pem.as_deref(),
        &token,
        &ns,
    )?;
    let mut env = std::collections::BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
    );
    env.insert("HOME".to_string(), dir.to_string_lossy().into_owned());
    env.insert("HOSTNAME".to_string(), pod.name_any());
    env.insert(
        "KUBECONFIG".to_string(),
        kubeconfig.to_string_lossy().into_owned(),
    );
    env.insert("KUBERNETES_SERVICE_HOST".to_string(), "127.0.0.1".into());
    env.insert(
        "KUBERNETES_SERVICE_PORT".to_string(),
        ctx.server_port().to_string(),
    );
    env.extend(environment(&ctx.client, view, c).await?);
    let argv = argv(pod, &env, &ctx.opts.binaries)?;
    Ok(Launch {
        argv,
        env,
        workdir: dir.to_path_buf(),
        log: dir.join("logs").join(format!("{}.log", c.name)),
        netns,
    })
}

/// A kubeconfig for the pod's service account (the test stand-in for the mounted token).
pub(crate) fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: Option<&str>,
    token: &str,
    namespace: &str,
) -> Result<()> {
    use base64::Engine;
    let ca = ca_pem
        .map(|pem| {
            format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testcluster\n  cluster:\n    server: {server}{ca}\n\
         users:\n- name: pod\n  user:\n    token: {token}\ncontexts:\n- name: pod\n  context:\n    \
         cluster: testcluster\n    user: pod\n    namespace: {namespace}\ncurrent-context: pod\n"
    );
    std::fs::write(path, text).map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_table() {
        let env: BTreeMap<String, String> = [("NODE".to_string(), "n1".to_string())].into();
        let cases = [
            ("--node=$(NODE)", "--node=n1"),
            ("$(MISSING)", "$(MISSING)"),
            ("$$(NODE)", "$(NODE)"),
            ("a$b", "a$b"),
            ("$(NODE)-$(NODE)", "n1-n1"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env), want, "{input}");
        }
    }
}
