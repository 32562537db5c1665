//! Node registration, status and the node Lease heartbeat.

use jiff::Timestamp;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Node};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use super::Ctx;
use crate::{
    error::{Error, Result},
    time::{micro_timestamp, timestamp},
};

fn conditions(ready: &str, now: &str) -> Value {
    let c = |t: &str, s: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": msg, "lastHeartbeatTime": now,
            "lastTransitionTime": now})
    };
    json!([
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        match ready {
            "True" => c(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status"
            ),
            other => c(
                "Ready",
                other,
                "NodeStatusUnknown",
                "Kubelet stopped posting node status."
            ),
        },
    ])
}

fn status(ctx: &Ctx, now: &str) -> Value {
    let resources =
        json!({"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"});
    json!({
        "conditions": conditions("True", now),
        "addresses": [{"type": "InternalIP", "address": ctx.opts.node_ip.to_string()},
                      {"type": "Hostname", "address": ctx.node}],
        "capacity": resources,
        "allocatable": resources,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, ctx.node.as_bytes()).simple().to_string(),
            "systemUUID": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, ctx.node.as_bytes()).to_string(),
            "bootID": uuid::Uuid::new_v4().to_string(),
            "kernelVersion": nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
            "osImage": "nightcap fake node",
            "containerRuntimeVersion": "fake://1.0.0",
            "kubeletVersion": "v1.33.0-fake",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

fn kerr(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { what, source }
}

/// Create (or refresh) the Node and its Lease.
pub(crate) async fn register(ctx: &Ctx) -> Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let now = timestamp(Timestamp::now());
    let mut labels = json!({
        "kubernetes.io/hostname": ctx.node,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    });
    for (k, v) in &ctx.opts.labels {
        labels[k] = json!(v);
    }
    let mut spec = json!({});
    if !ctx.opts.taints.is_empty() {
        spec["taints"] = json!(ctx.opts.taints);
    }
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": ctx.node, "labels": labels},
        "spec": spec, "status": status(ctx, &now)});
    let typed: Node = serde_json::from_value(node.clone())
        .map_err(|e| Error::Config(format!("node object: {e}")))?;
    match nodes.create(&PostParams::default(), &typed).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let pp = PatchParams::default();
            let meta = json!({"metadata": {"labels": labels}, "spec": spec});
            nodes
                .patch(&ctx.node, &pp, &Patch::Merge(&meta))
                .await
                .map_err(kerr(format!("updating node {}", ctx.node)))?;
            nodes
                .patch_status(
                    &ctx.node,
                    &pp,
                    &Patch::Merge(&json!({"status": status(ctx, &now)})),
                )
                .await
                .map_err(kerr(format!("updating node {} status", ctx.node)))?;
        }
        Err(e) => return Err(kerr(format!("registering node {}", ctx.node))(e)),
    }
    renew_lease(ctx).await
}

async fn renew_lease(ctx: &Ctx) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let now = micro_timestamp(Timestamp::now());
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": ctx.node},
        "spec": {"holderIdentity": ctx.node, "leaseDurationSeconds": 40, "renewTime": now}});
    leases
        .patch(
            &ctx.node,
            &PatchParams::apply("kubelet").force(),
            &Patch::Apply(&lease),
        )
        .await
        .map_err(kerr(format!("renewing the lease of node {}", ctx.node)))?;
    Ok(())
}

/// Renew the Lease and the Ready heartbeat until stopped.
pub(crate) async fn heartbeat(ctx: Ctx) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    loop {
        tokio::time::sleep(ctx.opts.heartbeat).await;
        if let Err(e) = renew_lease(&ctx).await {
            tracing::warn!(node = %ctx.node, error = %e, "Lease renewal failed.");
        }
        let now = timestamp(Timestamp::now());
        let patch = json!({"status": {"conditions": conditions("True", &now)}});
        if let Err(e) = nodes
            .patch_status(
                &ctx.node,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            tracing::warn!(node = %ctx.node, error = %e, "Node heartbeat failed.");
        }
    }
}

/// Ready=Unknown, as the node lifecycle controller marks a node whose kubelet went away.
pub(crate) async fn mark_not_ready(client: &kube::Client, node: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = timestamp(Timestamp::now());
    let patch = json!({"status": {"conditions": conditions("Unknown", &now)}});
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(kerr(format!("marking node {node} NotReady")))?;
    Ok(())
}
