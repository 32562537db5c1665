//! `kubectl` (the real client) against the test server: discovery, server-side printing, and a
//! Job created from YAML that a fake kubelet runs. Skips with a reason when kubectl is absent.

use std::{path::Path, time::Duration};

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use nightcap_testcluster::{ApiServer, FakeKubelet, KubeletOptions, Policy, ServerOptions};

fn kubectl_path() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("kubectl"))
        .find(|p| p.is_file())
}

async fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_nodes_and_runs_a_job_from_yaml() {
    if kubectl_path().is_none() {
        println!("SKIP: kubectl is not on PATH (Debian: apt-get install kubernetes-client)");
        return;
    }
    // kubectl sends no bearer token over plain HTTP: token-less requests act as admin here.
    let opts = ServerOptions {
        anonymous_user: Some("admin".into()),
        ..ServerOptions::default()
    };
    let server = ApiServer::start_with(Policy::new(), opts).await.unwrap();
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
    std::fs::write(&job, "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: hello\nspec:\n  template:\n    spec:\n      \
        nodeName: node-b\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: busybox\n        \
        command: [\"/bin/sh\", \"-c\", \"echo hello\"]\n").unwrap();
    let created = kubectl(
        &kc,
        &cache,
        &["create", "--validate=false", "-f", job.to_str().unwrap()],
    )
    .await;
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
    assert!(jobs.get("hello").await.unwrap().status.unwrap().succeeded == Some(1));
    let pods = kubectl(&kc, &cache, &["get", "pods", "-o", "wide", "--no-headers"]).await;
    assert!(
        pods.contains("Completed") && pods.contains("node-b"),
        "{pods}"
    );
    let pcs = kubectl(&kc, &cache, &["get", "packetcaptures", "-A"]).await;
    assert!(
        pcs.contains("No resources found") || pcs.is_empty(),
        "{pcs}"
    );
}
