//! `testcluster`: start the Kubernetes API test server and N fake kubelets on this machine for
//! manual runs, demos and debugging, and write a kubeconfig with one context per test user.
//!
//! ```text
//! testcluster --port 6443 --nodes 2 --kubeconfig /tmp/tc.yaml --user alice
//! kubectl --kubeconfig /tmp/tc.yaml get nodes
//! kubectl --kubeconfig /tmp/tc.yaml create --validate=false -f job.yaml
//! ```
//!
//! With `--runc --image nightcap:dev=/var/lib/nightcap/bundle` pods run as runc containers from
//! present images (root needed); `--netns-sandboxes` gives non-hostNetwork pods real network
//! namespaces; `--rbac manifests/rbac.yaml --sa-kubeconfig nightcap-system/nightcap-scheduler=/tmp/s.yaml`
//! lets a separate process run as that ServiceAccount under the manifests' RBAC.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::Parser;
use nightcap_testcluster::{
    ApiServer, FakeKubelet, KubeletOptions, NetnsSandboxes, Policy, Rule, RuncRuntime, Runtime,
    ServerOptions, User,
};

/// Start the API test server and fake kubelets.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    log: nightcap_process::LogArgs,
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, env = "NIGHTCAP_TESTCLUSTER_PORT", default_value_t = 0)]
    port: u16,
    /// Number of fake nodes (node-a, node-b, ...).
    #[arg(long, env = "NIGHTCAP_TESTCLUSTER_NODES", default_value_t = 1)]
    nodes: usize,
    /// Where to write the kubeconfig.
    #[arg(
        long,
        env = "NIGHTCAP_TESTCLUSTER_KUBECONFIG",
        default_value = "testcluster.kubeconfig"
    )]
    kubeconfig: PathBuf,
    /// Extra users (token `<name>-token`, a kubeconfig context each): `NAME=admin` may do
    /// everything, `NAME=rbac` only what `--rbac` grants it, `NAME` (or `NAME=view`) may read
    /// everything.
    #[arg(
        long = "user",
        env = "NIGHTCAP_TESTCLUSTER_USERS",
        value_delimiter = ','
    )]
    users: Vec<String>,
    /// CustomResourceDefinition YAML files (multi-document allowed) to register at start.
    #[arg(long = "crd", env = "NIGHTCAP_TESTCLUSTER_CRDS", value_delimiter = ',')]
    crds: Vec<PathBuf>,
    /// Serve plain HTTP instead of HTTPS. kubectl sends no bearer token over plain HTTP, so
    /// token-less requests then act as `admin` (like the old insecure port).
    #[arg(long, env = "NIGHTCAP_TESTCLUSTER_INSECURE_HTTP")]
    insecure_http: bool,
    /// Directory for pod working directories and logs (default: a temporary directory).
    #[arg(long, env = "NIGHTCAP_TESTCLUSTER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Run pods as runc containers from present images (`--image`); needs root.
    #[arg(long, env = "NIGHTCAP_TESTCLUSTER_RUNC")]
    runc: bool,
    /// The runc binary for `--runc`.
    #[arg(long, env = "NIGHTCAP_TESTCLUSTER_RUNC_BINARY", default_value = "runc")]
    runc_binary: PathBuf,
    /// A present image for `--runc`: `REF=BUNDLE_DIR` (an unpacked bundle, as `umoci unpack`).
    #[arg(long = "image", env = "NIGHTCAP_TESTCLUSTER_IMAGES", value_delimiter = ',', value_parser = parse_image)]
    images: Vec<(String, PathBuf)>,
    /// Give non-hostNetwork pods real network namespaces (NetnsPod); needs root.
    #[arg(long, env = "NIGHTCAP_TESTCLUSTER_NETNS_SANDBOXES")]
    netns_sandboxes: bool,
    /// RBAC YAML files (Roles, ClusterRoles, bindings; multi-document) added to the policy.
    #[arg(
        long = "rbac",
        env = "NIGHTCAP_TESTCLUSTER_RBAC",
        value_delimiter = ','
    )]
    rbac: Vec<PathBuf>,
    /// Write a kubeconfig for a ServiceAccount: `NAMESPACE/NAME=PATH`.
    #[arg(long = "sa-kubeconfig", env = "NIGHTCAP_TESTCLUSTER_SA_KUBECONFIGS", value_delimiter = ',', value_parser = parse_sa_kubeconfig)]
    sa_kubeconfigs: Vec<(String, String, PathBuf)>,
}

fn parse_image(s: &str) -> Result<(String, PathBuf), String> {
    let (image, dir) = s
        .split_once('=')
        .filter(|(i, d)| !i.is_empty() && !d.is_empty())
        .ok_or_else(|| format!("expected REF=BUNDLE_DIR, got {s:?}"))?;
    Ok((image.to_string(), PathBuf::from(dir)))
}

fn parse_sa_kubeconfig(s: &str) -> Result<(String, String, PathBuf), String> {
    let (account, path) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAMESPACE/NAME=PATH, got {s:?}"))?;
    let (ns, name) = account
        .split_once('/')
        .filter(|(n, a)| !n.is_empty() && !a.is_empty() && !path.is_empty())
        .ok_or_else(|| format!("expected NAMESPACE/NAME=PATH, got {s:?}"))?;
    Ok((ns.to_string(), name.to_string(), PathBuf::from(path)))
}

fn node_name(i: usize) -> String {
    let letter = (b'a' + (i % 26) as u8) as char;
    if i < 26 {
        format!("node-{letter}")
    } else {
        format!("node-{letter}{}", i / 26)
    }
}

fn policy(users: &[String]) -> anyhow::Result<Policy> {
    let mut p = Policy::new();
    for u in users {
        let (name, role) = u.split_once('=').unwrap_or((u.as_str(), "view"));
        let user = match role {
            "admin" => User::new(name).group("system:masters"),
            "rbac" => User::new(name),
            "view" => User::new(name).rule(Rule::new(["get", "list", "watch"], ["*"], ["*"])),
            other => anyhow::bail!("--user {u}: unknown role {other:?} (admin, rbac or view)"),
        };
        p = p.user(user);
    }
    Ok(p)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    nightcap_process::init_logging(&args.log)?;
    let opts = ServerOptions {
        port: args.port,
        tls: !args.insecure_http,
        anonymous_user: args.insecure_http.then(|| "admin".to_string()),
        ..ServerOptions::default()
    };
    let mut policy = policy(&args.users)?;
    for path in &args.rbac {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        policy = policy
            .with_rbac_yaml(&text)
            .map_err(|e| anyhow::anyhow!("loading RBAC from {}: {e}", path.display()))?;
    }
    let server = ApiServer::start_with(policy, opts)
        .await
        .context("starting the API test server")?;
    for path in &args.crds {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let crd = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("parsing {}", path.display()))?;
            server
                .register_crd(&crd)
                .with_context(|| format!("registering a CRD from {}", path.display()))?;
        }
    }
    let tmp;
    let state_dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a state directory")?;
            tmp.path().to_path_buf()
        }
    };
    let runtime = if args.runc {
        let mut r = RuncRuntime::new().binary(&args.runc_binary);
        for (image, dir) in &args.images {
            anyhow::ensure!(
                dir.join("config.json").is_file(),
                "--image {image}={}: not a bundle (no config.json)",
                dir.display()
            );
            r = r.image(image, dir);
        }
        Runtime::Runc(r)
    } else {
        anyhow::ensure!(args.images.is_empty(), "--image needs --runc");
        Runtime::Process
    };
    let sandboxes = args.netns_sandboxes.then(|| {
        Arc::new(NetnsSandboxes::default()) as Arc<dyn nightcap_testcluster::SandboxProvider>
    });
    let mut kubelets = Vec::new();
    for i in 0..args.nodes {
        let name = node_name(i);
        let opts = KubeletOptions {
            state_dir: Some(state_dir.join(&name)),
            accept_unpinned: i == 0,
            runtime: runtime.clone(),
            sandboxes: sandboxes.clone(),
            ..KubeletOptions::default()
        };
        kubelets.push(
            FakeKubelet::start(&server, &name, opts)
                .await
                .with_context(|| format!("starting kubelet {name}"))?,
        );
    }
    server
        .kubeconfig(&args.kubeconfig)
        .context("writing the kubeconfig")?;
    println!("API server: {}", server.url());
    println!(
        "kubeconfig: {} (contexts: {})",
        args.kubeconfig.display(),
        server
            .policy()
            .users()
            .iter()
            .map(|u| u.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "nodes: {}",
        (0..args.nodes)
            .map(node_name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (ns, name, path) in &args.sa_kubeconfigs {
        let text = server
            .service_account_kubeconfig(ns, name)
            .context("building a service account kubeconfig")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "kubeconfig of serviceaccount {ns}/{name}: {}",
            path.display()
        );
    }
    println!("pod state: {}", state_dir.display());
    match &runtime {
        Runtime::Runc(r) => {
            println!(
                "runtime: runc ({}), state {}/<node>/runc",
                r.binary.display(),
                state_dir.display()
            );
            for (image, dir) in &r.images {
                println!("image {image}: {}", dir.display());
            }
        }
        Runtime::Process => println!("runtime: local processes"),
    }
    if args.netns_sandboxes {
        println!("pod sandboxes: network namespaces (ip netns list)");
    }
    println!("Press Ctrl-C (or send SIGTERM) to stop.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    // Dropping the kubelets kills their pods' processes and removes their sandboxes.
    drop(kubelets);
    Ok(())
}
