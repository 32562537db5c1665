//! The plugin's test cluster: the e2e [`Cluster`] plus users with the rights people get from
//! `manifests/user-roles.yaml`, `nightcap gateway` running as a pod in `nightcap-system` (reached
//! by port-forward or `--gateway`), and the plugin run as a user runs it: the `nightcap` binary's
//! plugin verbs with a kubeconfig of their own.

#![allow(dead_code)] // each test binary uses a different part

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use chrono::{TimeZone, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use nightcap_api::PacketCapture;
use nightcap_storage::{CaptureKey, KeyPrefix};
use nightcap_testcluster::{Rule, User};
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::e2e::{Cluster, NS, SYSTEM_NS, eventually, role_rules};

/// Creates captures, reads them and their files, may port-forward to the gateway.
pub const ALICE: &str = "alice";
/// Creates and reads captures in team-a, but may not read their files.
pub const BOB: &str = "bob";
/// The storage prefix the e2e cluster's capture Jobs write under.
pub const PREFIX: &str = "e2e";

pub struct PluginCluster {
    pub c: Cluster,
    /// Port of the gateway (on 127.0.0.1).
    pub gateway_port: Option<u16>,
    gateway_process: Option<std::process::Child>,
}

impl Drop for PluginCluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.gateway_process.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn captures_rule() -> Rule {
    Rule::new(
        [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        ["nightcap.dev"],
        ["packetcaptures", "captureschedules", "capturetriggers"],
    )
    .in_namespaces([NS])
}

impl PluginCluster {
    pub async fn start(nodes: &[&str]) -> Self {
        let c = Cluster::start(nodes).await;
        let events =
            Rule::new(["get", "list"], ["events.k8s.io", ""], ["events"]).in_namespaces([NS]);
        let policy = c
            .server
            .policy()
            .user(
                User::new(ALICE)
                    .rule(captures_rule())
                    // nightcap-capture-viewer bound cluster-wide (for `get -A`).
                    .rule(Rule::new(
                        ["get", "list", "watch"],
                        ["nightcap.dev"],
                        ["packetcaptures"],
                    ))
                    .rule(events.clone())
                    .rule(
                        Rule::new(["get"], ["nightcap.dev"], ["packetcaptures/files"])
                            .in_namespaces([NS]),
                    )
                    .rule(Rule::new(["get", "list"], [""], ["pods"]).in_namespaces([SYSTEM_NS]))
                    .rule(Rule::new(["get"], [""], ["configmaps"]).in_namespaces([SYSTEM_NS]))
                    .rule(
                        Rule::new(["create"], [""], ["pods/portforward"])
                            .in_namespaces([SYSTEM_NS]),
                    ),
            )
            .user(
                User::new(BOB)
                    .rule(captures_rule())
                    .rule(events)
                    .rule(Rule::new(["get"], [""], ["configmaps"]).in_namespaces([SYSTEM_NS])),
            )
            .service_account(
                SYSTEM_NS,
                "nightcap-gateway",
                role_rules("gateway-rbac.yaml", "ClusterRole", "nightcap-gateway", None),
            );
        c.server.set_policy(policy);
        Self {
            c,
            gateway_port: None,
            gateway_process: None,
        }
    }

    /// A kubeconfig for `user` whose context's namespace is team-a (as a team's would be).
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        let path = self.c.dir.path().join(format!("{user}.kubeconfig"));
        let yaml = self
            .c
            .server
            .kubeconfig_yaml(user)
            .expect("kubeconfig")
            .replace("namespace: default", &format!("namespace: {NS}"));
        std::fs::write(&path, yaml).expect("kubeconfig written");
        path
    }

    /// Runs `nightcap ARGS` as `user` in `cwd`, like a person at a terminal would (no TTY).
    pub async fn plugin(&self, user: &str, args: &[&str]) -> Output {
        self.plugin_in(user, self.c.dir.path(), args).await
    }

    pub async fn plugin_in(&self, user: &str, cwd: &Path, args: &[&str]) -> Output {
        self.command(user, cwd, args)
            .output()
            .await
            .expect("the plugin runs")
    }

    pub fn command(&self, user: &str, cwd: &Path, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nightcap"));
        cmd.args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.c.dir.path())
            .env("KUBECONFIG", self.kubeconfig(user))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Starts `nightcap gateway` as a pod of nightcap-system on the first node, as the install
    /// runs it (its service account, its store from the environment).
    pub async fn start_gateway_pod(&mut self) -> u16 {
        let port = nightcap_testsupport::util::free_tcp_port();
        let node = self.c.kubelets.keys().next().expect("a node").clone();
        let env: Vec<_> = self
            .c
            .s3
            .client_env()
            .into_iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "nightcap-gateway-0", "labels": {
                "app.kubernetes.io/name": "nightcap", "app.kubernetes.io/component": "gateway"}},
            "spec": {"nodeName": node, "serviceAccountName": "nightcap-gateway",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "gateway", "image": "nightcap",
                    "command": ["nightcap", "gateway"],
                    "args": ["--listen", format!("127.0.0.1:{port}"),
                        "--store", format!("s3://{}/{PREFIX}", self.c.s3.bucket()),
                        "--retention-interval", "0"],
                    "env": env,
                    "ports": [{"name": "http", "containerPort": port}]}]},
        }))
        .expect("pod JSON");
        let pods: Api<Pod> = Api::namespaced(self.c.admin.clone(), SYSTEM_NS);
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("gateway pod created");
        eventually("the gateway answers", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        self.gateway_port = Some(port);
        port
    }

    /// Starts `nightcap gateway` as a plain process with the gateway's service account (a
    /// gateway outside the cluster: only `--gateway` or a published URL reach it).
    pub async fn start_gateway_process(&mut self) -> u16 {
        let port = nightcap_testsupport::util::free_tcp_port();
        let kubeconfig = self.c.dir.path().join("gateway.kubeconfig");
        let user = format!("system:serviceaccount:{SYSTEM_NS}:nightcap-gateway");
        let yaml = self.c.server.kubeconfig_yaml(&user).expect("kubeconfig");
        std::fs::write(&kubeconfig, yaml).expect("kubeconfig written");
        let log = std::fs::File::create(self.c.dir.path().join("gateway.log")).expect("log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_nightcap"))
            .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--store", &format!("s3://{}/{PREFIX}", self.c.s3.bucket())])
            .args(["--retention-interval", "0"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kubeconfig)
            .envs(self.c.s3.client_env())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("nightcap gateway starts");
        self.gateway_process = Some(child);
        eventually("the gateway answers", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        self.gateway_port = Some(port);
        port
    }

    pub fn gateway_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.gateway_port.expect("gateway started")
        )
    }

    /// A finished capture whose files are in storage and in its status, as a capture Job
    /// leaves them: `files[i]` = (node, contents).
    pub async fn stored_capture(&self, name: &str, files: &[(&str, Vec<u8>)]) -> PacketCapture {
        let pc: PacketCapture = serde_json::from_value(json!({
            "apiVersion": "nightcap.dev/v1alpha1", "kind": "PacketCapture",
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": "nothing"}}, "duration": "1m"},
        }))
        .expect("capture JSON");
        let pc = self
            .c
            .captures()
            .create(&PostParams::default(), &pc)
            .await
            .expect("capture created");
        let uid = pc.metadata.uid.clone().expect("uid");
        let store = self.c.s3.object_store().expect("S3 client");
        let prefix = KeyPrefix::new(PREFIX).expect("prefix");
        let mut nodes = serde_json::Map::new();
        for (seq, (node, bytes)) in files.iter().enumerate() {
            let start = Utc
                .timestamp_opt(1_796_000_000 + seq as i64 * 60, 0)
                .single()
                .expect("time");
            let key = CaptureKey::new(NS, name, &uid, node, start, seq as u64).expect("key");
            store
                .put(&key.to_path(&prefix), PutPayload::from(bytes.clone()))
                .await
                .expect("object stored");
            let entry = nodes.entry(node.to_string()).or_insert_with(
                || json!({"state": "Finished", "packets": 0, "bytes": 0, "drops": 0, "files": []}),
            );
            entry["files"].as_array_mut().expect("files").push(json!({
                "key": key.to_key(&prefix), "bytes": bytes.len(), "packets": 1,
                "sha256": hex::encode(Sha256::digest(bytes)),
                "start": start.to_rfc3339(), "end": start.to_rfc3339(),
            }));
        }
        let status =
            json!({"status": {"phase": "Succeeded", "nodeCount": nodes.len(), "nodes": nodes}});
        self.c
            .captures()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status patched")
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Panics with both streams unless the command exited 0.
pub fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}
