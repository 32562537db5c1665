//! Workload pods backed by real network namespaces (NetnsPod): the pod IP comes from the
//! sandbox, the container process runs inside it, and a pod "moved" to another node gets a new
//! uid and a new network namespace. Needs root (skips with a reason otherwise).

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};
use nightcap_testcluster::{ApiServer, FakeKubelet, KubeletOptions, NetnsSandboxes, Policy};
use serde_json::json;

fn workload(node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "web", "image": "nginx",
            "command": ["/bin/sh", "-c",
                "echo netns=$(readlink /proc/self/ns/net); ip -o -4 addr show dev eth0; exec sleep 300"]}]}
    }))
    .expect("pod")
}

async fn running(pods: &Api<Pod>, kubelet: &FakeKubelet) -> (Pod, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(p) = pods.get_opt("web").await.expect("reading the pod") {
            let logs = kubelet.logs("default", "web");
            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
            if phase.as_deref() == Some("Running") && logs.contains("inet ") {
                return (p, logs);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workload pod never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn workload_pods_get_netns_ips_and_move_between_nodes() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("SKIP: network namespaces need root");
        return;
    }
    let server = ApiServer::start(Policy::new()).await.unwrap();
    let sandboxes = Arc::new(NetnsSandboxes {
        prefix: Some("tcwork".into()),
    });
    let opts = KubeletOptions {
        sandboxes: Some(sandboxes),
        ..KubeletOptions::default()
    };
    let a = FakeKubelet::start(&server, "node-a", opts.clone())
        .await
        .unwrap();
    let b = FakeKubelet::start(&server, "node-b", opts).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.admin_client().unwrap(), "default");

    pods.create(&PostParams::default(), &workload("node-a"))
        .await
        .unwrap();
    let (first, logs_a) = running(&pods, &a).await;
    let st = first.status.clone().unwrap();
    let ip = st.pod_ip.clone().unwrap();
    assert_ne!(ip, "127.0.0.1");
    assert_eq!(st.pod_ips.as_ref().unwrap().len(), 2, "IPv4 and IPv6");
    assert!(
        logs_a.contains(&format!("inet {ip}/")),
        "the process runs in the pod's netns: {logs_a}"
    );
    // The process runs in the sandbox's namespace (same inode as /var/run/netns/NAME).
    let path_a = a.netns_path("default", "web").expect("sandbox netns");
    let inode = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    };
    let netns_a = logs_a
        .lines()
        .find_map(|l| l.strip_prefix("netns="))
        .unwrap()
        .to_string();
    assert_eq!(netns_a, format!("net:[{}]", inode(&path_a)), "{logs_a}");

    // Move: delete on node-a, recreate on node-b.
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while pods.get_opt("web").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pods.create(&PostParams::default(), &workload("node-b"))
        .await
        .unwrap();
    let (second, logs_b) = running(&pods, &b).await;
    assert_ne!(second.uid(), first.uid());
    assert_eq!(
        second.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-b")
    );
    let ip_b = second.status.unwrap().pod_ip.unwrap();
    assert!(logs_b.contains(&format!("inet {ip_b}/")), "{logs_b}");
    let path_b = b.netns_path("default", "web").expect("sandbox netns");
    assert_ne!(
        path_b, path_a,
        "a recreated pod gets a new network namespace"
    );
    assert!(
        !path_a.exists(),
        "the old pod's namespace is removed with it"
    );
    let netns_b = logs_b
        .lines()
        .find_map(|l| l.strip_prefix("netns="))
        .unwrap()
        .to_string();
    assert_eq!(netns_b, format!("net:[{}]", inode(&path_b)), "{logs_b}");
}
