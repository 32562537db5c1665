//! `kubectl` (the real client) against the test server over TLS with per-user tokens:
//! discovery, server-side printing, authorisation, and a Job created from YAML that a fake
//! kubelet runs. Skips with a reason when kubectl is absent.

use std::{path::Path, time::Duration};

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use nightcap_testcluster::{
    ApiServer, FakeKubelet, KubeletOptions, Policy, Rule, ServerOptions, User,
};

fn kubectl_path() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("kubectl"))
        .find(|p| p.is_file())
}

async fn kubectl_result(kubeconfig: &Path, cache: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

async fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = kubectl_result(kubeconfig, cache, args).await;
    assert!(ok, "kubectl {args:?} failed: {stdout}{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_nodes_and_runs_a_job_from_yaml() {
    if kubectl_path().is_none() {
        println!("SKIP: kubectl is not on PATH (Debian: apt-get install kubernetes-client)");
        return;
    }
    // Over TLS kubectl sends each context's bearer token, so the policy applies to it.
    let opts = ServerOptions {
        tls: true,
        ..ServerOptions::default()
    };
    let policy = Policy::new().user(User::new("alice").rule(Rule::new(
        ["get", "list", "watch"],
        ["*"],
        ["*"],
    )));
    let server = ApiServer::start_with(policy, opts).await.unwrap();
    assert!(server.url().starts_with("https://"));
    let _a = FakeKubelet::start(&server, "node-a", KubeletOptions::default())
        .await
        .unwrap();
    let _b = FakeKubelet::start(&server, "node-b", KubeletOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    server.kubeconfig(&kc).unwrap();
    let cache = dir.path().join("cache");

    let nodes = kubectl(&kc, &cache, &["get", "nodes"]).await;
    assert!(nodes.starts_with("NAME"), "{nodes}");
    for n in ["node-a", "node-b"] {
        assert!(
            nodes
                .lines()
                .any(|l| l.starts_with(n) && l.contains("Ready")),
            "{nodes}"
        );
    }
    let resources = kubectl(&kc, &cache, &["api-resources", "-o", "name"]).await;
    for r in [
        "pods",
        "jobs.batch",
        "leases.coordination.k8s.io",
        "packetcaptures.nightcap.dev",
    ] {
        assert!(
            resources.lines().any(|l| l == r),
            "{r} missing from {resources}"
        );
    }

    let job = dir.path().join("job.yaml");
    std::fs::write(
        &job,
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: hello\nspec:\n  template:\n    spec:\n      \
         nodeName: node-b\n      restartPolicy: Never\n      containers:\n      - name: main\n        \
         image: busybox\n        command: [\"/bin/sh\", \"-c\", \"echo hello\"]\n",
    )
    .unwrap();
    let job_path = job.to_str().unwrap();
    // alice (read-only) may list nodes but not create the Job; the 403 reaches kubectl as is.
    let as_alice = kubectl(
        &kc,
        &cache,
        &["--context", "alice", "get", "nodes", "-o", "name"],
    )
    .await;
    assert_eq!(
        as_alice.lines().collect::<Vec<_>>(),
        ["node/node-a", "node/node-b"]
    );
    let (ok, _, err) = kubectl_result(
        &kc,
        &cache,
        &[
            "--context",
            "alice",
            "create",
            "--validate=false",
            "-f",
            job_path,
        ],
    )
    .await;
    assert!(
        !ok && err.contains("User \"alice\" cannot create resource \"jobs\""),
        "{err}"
    );

    let created = kubectl(&kc, &cache, &["create", "--validate=false", "-f", job_path]).await;
    assert_eq!(created.trim(), "job.batch/hello created");
    let jobs: Api<Job> = Api::namespaced(server.admin_client().unwrap(), "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = kubectl(&kc, &cache, &["get", "job", "hello", "--no-headers"]).await;
        if out.contains("Complete") {
            assert!(out.contains("1/1"), "{out}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never completed: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        jobs.get("hello").await.unwrap().status.unwrap().succeeded,
        Some(1)
    );
    let pods = kubectl(&kc, &cache, &["get", "pods", "-o", "wide", "--no-headers"]).await;
    assert!(
        pods.contains("Completed") && pods.contains("node-b"),
        "{pods}"
    );
}
