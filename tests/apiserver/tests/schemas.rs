//! Objects created through the server (by kube-rs code and the fake kubelet) pass the real
//! Kubernetes 1.33 schemas (`kubernetes-validate --strict`) and their CRDs' schemas.

use std::time::Duration;

use k8s_openapi::api::{batch::v1::Job, core::v1::ObjectReference};
use kube::{
    Api, Resource,
    api::PostParams,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use nightcap_api::PacketCapture;
use nightcap_testcluster::{ApiServer, FakeKubelet, KubeletOptions, Policy, schema_check};
use serde_json::json;

#[tokio::test]
async fn stored_objects_pass_kubernetes_validate_strict() {
    if !schema_check::kubernetes_validate_available() {
        println!("SKIP: kubernetes-validate is not installed (pip install kubernetes-validate)");
        return;
    }
    let server = ApiServer::start(Policy::new()).await.unwrap();
    let _k = FakeKubelet::start(&server, "node-a", KubeletOptions::default())
        .await
        .unwrap();
    let client = server.admin_client().unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "check", "labels": {"app.kubernetes.io/name": "nightcap"}},
        "spec": {"ttlSecondsAfterFinished": 600, "template": {"spec": {
            "nodeName": "node-a", "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "x", "command": ["/bin/true"],
                "securityContext": {"capabilities": {"add": ["NET_RAW", "BPF"]}, "readOnlyRootFilesystem": true}}]}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while jobs
        .get("check")
        .await
        .unwrap()
        .status
        .and_then(|s| s.succeeded)
        != Some(1)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "job did not complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pcs: Api<PacketCapture> = Api::namespaced(client.clone(), "default");
    let pc: PacketCapture = serde_json::from_value(
        json!({"apiVersion": "nightcap.dev/v1alpha1", "kind": "PacketCapture",
        "metadata": {"name": "cap"}, "spec": {"selector": {}, "snapLen": 128}}),
    )
    .unwrap();
    let pc = pcs.create(&PostParams::default(), &pc).await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "nightcap-scheduler".into(),
            instance: None,
        },
    );
    let reference: ObjectReference = pc.object_ref(&());
    let ev = Event {
        type_: EventType::Normal,
        reason: "Scheduled".into(),
        note: Some("1 node".into()),
        action: "Schedule".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();

    let kinds = [
        "Job",
        "Pod",
        "Node",
        "Lease",
        "Event",
        "Namespace",
        "PacketCapture",
    ];
    let objects = server.objects(&kinds);
    for k in kinds {
        assert!(objects.iter().any(|o| o["kind"] == k), "no {k} stored");
    }
    server.check_stored(&kinds).unwrap();

    // The check does fail on a bad object (unknown field in a Job; bad CR value).
    let mut bad_job = objects.iter().find(|o| o["kind"] == "Job").unwrap().clone();
    bad_job["spec"]["template"]["spec"]["containers"][0]["bogus"] = json!(1);
    let err = server.check_objects(&[bad_job]).unwrap_err().to_string();
    assert!(err.contains("'bogus' was unexpected"), "{err}");
    let mut bad_pc = objects
        .iter()
        .find(|o| o["kind"] == "PacketCapture")
        .unwrap()
        .clone();
    bad_pc["spec"]["snapLen"] = json!(1);
    let err = server.check_objects(&[bad_pc]).unwrap_err().to_string();
    assert!(err.contains("spec.snapLen"), "{err}");
}

/// The RBAC manifests we ship load into a test policy (every binding's role exists) and pass
/// `kubernetes-validate --strict`.
#[tokio::test]
async fn shipped_rbac_manifests_load_and_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests");
    let server = ApiServer::start(Policy::new()).await.unwrap();
    let mut rbac_docs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        Policy::new()
            .with_rbac_yaml(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if v["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("rbac.authorization.k8s.io/"))
            {
                rbac_docs.push(v);
            }
        }
    }
    assert!(
        !rbac_docs.is_empty(),
        "no RBAC objects found in {}",
        dir.display()
    );
    if !schema_check::kubernetes_validate_available() {
        println!(
            "SKIP (schema part): kubernetes-validate is not installed (pip install kubernetes-validate)"
        );
        return;
    }
    server.check_objects(&rbac_docs).unwrap();
}
