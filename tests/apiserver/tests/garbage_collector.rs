//! The garbage collector: dependents whose owner is gone are collected (also among many
//! unrelated objects, which the collector no longer reads on every write), live owners keep
//! their dependents, and foreground deletion waits until every dependent is gone.

use std::time::Duration;

use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use nightcap_testcluster::{ApiServer, Policy};
use serde_json::json;

async fn server() -> (ApiServer, Api<ConfigMap>) {
    let s = ApiServer::start(Policy::new()).await.expect("server");
    let c = s.admin_client().expect("client");
    (s, Api::namespaced(c, "default"))
}

fn cm(name: &str, owner: Option<OwnerReference>, finalizers: &[&str]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: owner.map(|o| vec![o]),
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect())
                .filter(|f: &Vec<String>| !f.is_empty()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

fn owner_ref(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: name.into(),
        uid: uid.into(),
        block_owner_deletion: Some(true),
        controller: Some(true),
    }
}

async fn create(api: &Api<ConfigMap>, obj: &ConfigMap) -> ConfigMap {
    api.create(&PostParams::default(), obj)
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", obj.name_any()))
}

/// Waits until `name` is gone (the collector runs in the background).
async fn wait_gone(api: &Api<ConfigMap>, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while api.get_opt(name).await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} was not garbage-collected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn dependents_of_missing_owners_are_collected_among_unrelated_objects() {
    let (_s, api) = server().await;
    for i in 0..200 {
        create(&api, &cm(&format!("plain-{i}"), None, &[])).await;
    }
    let owner = create(&api, &cm("owner", None, &[])).await;
    let uid = owner.uid().expect("uid");
    create(&api, &cm("kept", Some(owner_ref("owner", &uid)), &[])).await;
    // An owner reference to an object that never existed: collected like a deleted owner.
    let ghost = owner_ref("ghost", "00000000-0000-4000-8000-00000000dead");
    create(&api, &cm("orphan", Some(ghost), &[])).await;
    wait_gone(&api, "orphan").await;
    // The pass that collected the orphan also saw `kept`, whose owner lives.
    assert!(api.get_opt("kept").await.expect("get").is_some());
    let plain = api.list(&ListParams::default()).await.expect("list").items;
    assert_eq!(plain.len(), 200 + 2, "unrelated objects are untouched");
    // Deleting the owner collects its dependent.
    api.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    wait_gone(&api, "kept").await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_every_dependent() {
    let (_s, api) = server().await;
    let owner = create(&api, &cm("fg-owner", None, &[])).await;
    let uid = owner.uid().expect("uid");
    let hold = "test.nightcap.dev/hold";
    create(
        &api,
        &cm("fg-dep", Some(owner_ref("fg-owner", &uid)), &[hold]),
    )
    .await;
    api.delete("fg-owner", &DeleteParams::foreground())
        .await
        .expect("delete owner");
    // The collector deletes the dependent; its finalizer keeps it (being deleted).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let dep = api.get("fg-dep").await.expect("dependent");
        if dep.metadata.deletion_timestamp.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dependent was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = api
        .get("fg-owner")
        .await
        .expect("owner waits for its dependent");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(
        waiting
            .finalizers()
            .iter()
            .any(|f| f == "foregroundDeletion")
    );
    // Releasing the dependent lets both go.
    api.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release the dependent");
    wait_gone(&api, "fg-dep").await;
    wait_gone(&api, "fg-owner").await;
}
