//! `testcluster`: start the Kubernetes API test server and N fake kubelets on this machine for
//! manual runs, demos and debugging, and write a kubeconfig with one context per test user.
//!
//! ```text
//! testcluster --port 6443 --nodes 2 --kubeconfig /tmp/tc.yaml --user alice
//! kubectl --kubeconfig /tmp/tc.yaml get nodes
//! kubectl --kubeconfig /tmp/tc.yaml create --validate=false -f job.yaml
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use nightcap_testcluster::{
    ApiServer, FakeKubelet, KubeletOptions, Policy, Rule, ServerOptions, User,
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
    /// Extra users (token `<name>-token`); `name=admin` grants everything, otherwise read-only.
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
}

fn node_name(i: usize) -> String {
    let letter = (b'a' + (i % 26) as u8) as char;
    if i < 26 {
        format!("node-{letter}")
    } else {
        format!("node-{letter}{}", i / 26)
    }
}

fn policy(users: &[String]) -> Policy {
    let mut p = Policy::new();
    for u in users {
        let (name, role) = u.split_once('=').unwrap_or((u.as_str(), "view"));
        let user = if role == "admin" {
            User::new(name).group("system:masters")
        } else {
            User::new(name).rule(Rule::new(["get", "list", "watch"], ["*"], ["*"]))
        };
        p = p.user(user);
    }
    p
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
    let server = ApiServer::start_with(policy(&args.users), opts)
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
    let mut kubelets = Vec::new();
    for i in 0..args.nodes {
        let name = node_name(i);
        let opts = KubeletOptions {
            state_dir: Some(state_dir.join(&name)),
            accept_unpinned: i == 0,
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
    println!("pod state: {}", state_dir.display());
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
