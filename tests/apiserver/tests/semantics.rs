//! Server semantics: CRD schema enforcement (nightcap's CRDs and a hand-written one), status
//! subresource and generation, server-side apply conflicts, finalizers, field selectors,
//! namespace termination.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams,
    },
    discovery::Discovery,
};
use nightcap_api::PacketCapture;
use nightcap_testcluster::{ApiServer, Policy};
use serde_json::{Value, json};

async fn server() -> (ApiServer, kube::Client) {
    let s = ApiServer::start(Policy::new()).await.expect("server");
    let c = s.admin_client().expect("client");
    (s, c)
}

fn api_status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.test"},
        "spec": {"group": "example.test", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "required": ["spec"], "properties": {
                    "spec": {"type": "object", "required": ["size"], "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                        "name": {"type": "string", "pattern": "^[a-z]+$"},
                        "port": {"x-kubernetes-int-or-string": true},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    }},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                }}}}]}
    }))
    .expect("valid CRD")
}

fn widgets(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.test", "v1", "Widget"),
        "widgets",
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "example.test/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}))
        .expect("widget")
}

#[tokio::test]
async fn crd_schema_is_enforced_with_field_paths() {
    let (_s, client) = server().await;
    // Registered through the API, like `kubectl apply -f crd.yaml`.
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &widget_crd())
        .await
        .unwrap();
    let api = widgets(&client);
    let ok = api
        .create(
            &PostParams::default(),
            &widget(
                "w1",
                json!({"size": 3, "port": "http", "bogus": 1, "extra": {"x": {"y": 1}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(ok.data["spec"]["color"], "red", "default applied");
    assert!(
        ok.data["spec"].get("bogus").is_none(),
        "unknown field pruned"
    );
    assert_eq!(
        ok.data["spec"]["extra"]["x"]["y"], 1,
        "preserved unknown fields kept"
    );
    let cases = [
        (json!({}), "spec.size", "Required value"),
        (
            json!({"size": 11}),
            "spec.size",
            "spec.size in body should be less than or equal to 10",
        ),
        (
            json!({"size": 1, "color": "green"}),
            "spec.color",
            "Unsupported value: \"green\": supported values: \"red\", \"blue\"",
        ),
        (
            json!({"size": 1, "name": "Bad"}),
            "spec.name",
            "spec.name in body should match '^[a-z]+$'",
        ),
        (
            json!({"size": "big"}),
            "spec.size",
            "spec.size in body must be of type integer",
        ),
        (
            json!({"size": 1, "port": 1.5}),
            "spec.port",
            "integer-or-string",
        ),
    ];
    for (i, (spec, field, msg)) in cases.into_iter().enumerate() {
        let st = api_status(
            api.create(
                &PostParams::default(),
                &widget(&format!("bad{i}"), spec.clone()),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"), "{spec}");
        assert!(
            st.message
                .starts_with(&format!("Widget.example.test \"bad{i}\" is invalid: ")),
            "{}",
            st.message
        );
        assert!(st.message.contains(msg), "{spec}: {}", st.message);
        let causes = st.details.unwrap().causes;
        assert!(
            causes.iter().any(|c| c.field == field),
            "{spec}: {causes:?}"
        );
    }
    // Deleting the CRD stops serving it and removes its objects.
    Api::<CustomResourceDefinition>::all(client.clone())
        .delete("widgets.example.test", &DeleteParams::default())
        .await
        .unwrap();
    let st = api_status(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(st.code, 404);
}

#[tokio::test]
async fn nightcap_crds_are_served_with_status_subresource_and_generation() {
    let (_s, client) = server().await;
    let d = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = d
        .get("nightcap.dev")
        .unwrap()
        .recommended_kind("PacketCapture")
        .unwrap();
    assert_eq!(
        (ar.plural.as_str(), caps.scope.clone()),
        ("packetcaptures", kube::discovery::Scope::Namespaced)
    );
    let pcs: Api<PacketCapture> = Api::namespaced(client.clone(), "default");
    let pc: PacketCapture = serde_json::from_value(json!({
        "apiVersion": "nightcap.dev/v1alpha1", "kind": "PacketCapture", "metadata": {"name": "cap"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "filters": [{"protocol": "TCP", "ports": [443]}]}
    }))
    .unwrap();
    let created = pcs.create(&PostParams::default(), &pc).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // Status writes go through /status and leave spec and generation alone.
    let st = json!({"status": {"phase": "Capturing", "packets": 5}, "spec": {"snapLen": 100}});
    let after = pcs
        .patch_status("cap", &PatchParams::default(), &Patch::Merge(&st))
        .await
        .unwrap();
    assert_eq!(after.metadata.generation, Some(1));
    assert_eq!(
        after.spec.snap_len, None,
        "a status write must not change the spec"
    );
    assert_eq!(after.status.as_ref().unwrap().packets, Some(5));
    // Spec writes bump generation and cannot change status.
    let sp = json!({"spec": {"snapLen": 128}, "status": {"packets": 99}});
    let after = pcs
        .patch("cap", &PatchParams::default(), &Patch::Merge(&sp))
        .await
        .unwrap();
    assert_eq!(
        (after.metadata.generation, after.spec.snap_len),
        (Some(2), Some(128))
    );
    assert_eq!(after.status.as_ref().unwrap().packets, Some(5));
    // Schema validation from the generated CRD.
    let bad = json!({"spec": {"snapLen": 10}});
    let err = api_status(
        pcs.patch("cap", &PatchParams::default(), &Patch::Merge(&bad))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("spec.snapLen in body should be greater than or equal to 64"),
        "{}",
        err.message
    );
    let bad = json!({"spec": {"filters": [{"protocol": "XTP"}]}});
    let err = api_status(
        pcs.patch("cap", &PatchParams::default(), &Patch::Merge(&bad))
            .await
            .unwrap_err(),
    );
    assert!(
        err.details
            .unwrap()
            .causes
            .iter()
            .any(|c| c.field == "spec.filters[0].protocol")
    );
    // Strategic merge patch is not supported for custom resources, as on a real cluster.
    let err = api_status(
        pcs.patch("cap", &PatchParams::default(), &Patch::Strategic(&sp))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 415);
}

#[tokio::test]
async fn server_side_apply_conflicts_unless_forced() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mine = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}});
    let created = cms
        .patch("ssa", &PatchParams::apply("alpha"), &Patch::Apply(&mine))
        .await
        .unwrap();
    assert_eq!(
        created.managed_fields()[0].manager.as_deref(),
        Some("alpha")
    );
    assert_eq!(
        created.managed_fields()[0].operation.as_deref(),
        Some("Apply")
    );
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "9"}});
    let st = api_status(
        cms.patch("ssa", &PatchParams::apply("beta"), &Patch::Apply(&theirs))
            .await
            .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    assert!(
        st.message.contains("conflict with \"alpha\": .data.a"),
        "{}",
        st.message
    );
    let forced = cms
        .patch(
            "ssa",
            &PatchParams::apply("beta").force(),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["a"], "9");
    // A non-apply update by another manager takes ownership of what it changed.
    let upd = cms
        .patch(
            "ssa",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"b": "3"}})),
        )
        .await
        .unwrap();
    assert!(
        upd.managed_fields()
            .iter()
            .any(|m| m.operation.as_deref() == Some("Update"))
    );
    // alpha re-applies without b and a: a stays (owned by beta), b stays (now owned by the updater).
    let again =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {}});
    let out = cms
        .patch("ssa", &PatchParams::apply("alpha"), &Patch::Apply(&again))
        .await
        .unwrap();
    assert_eq!(
        out.data.unwrap(),
        [
            ("a".to_string(), "9".to_string()),
            ("b".to_string(), "3".to_string())
        ]
        .into()
    );
    // Missing fieldManager for apply is rejected.
    let st = api_status(
        cms.patch("ssa", &PatchParams::default(), &Patch::Apply(&again))
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 422);
}

#[tokio::test]
async fn finalizer_blocks_deletion_until_removed() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "fin", "finalizers": ["example.test/hold"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let deleted = cms.delete("fin", &DeleteParams::default()).await.unwrap();
    assert!(
        deleted.is_left(),
        "object still present while finalizers remain"
    );
    let held = cms.get("fin").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    // New finalizers may not be added while deleting.
    let add = json!({"metadata": {"finalizers": ["example.test/hold", "example.test/more"]}});
    assert_eq!(
        api_status(
            cms.patch("fin", &PatchParams::default(), &Patch::Merge(&add))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    let clear = json!({"metadata": {"finalizers": null}});
    cms.patch("fin", &PatchParams::default(), &Patch::Merge(&clear))
        .await
        .unwrap();
    assert!(cms.get_opt("fin").await.unwrap().is_none());
}

#[tokio::test]
async fn field_selectors_and_namespace_termination() {
    let (_s, client) = server().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap(),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "scratch");
    for (name, node) in [("p1", Some("n1")), ("p2", Some("n2")), ("p3", None)] {
        let mut p = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        pods.create(&PostParams::default(), &serde_json::from_value(p).unwrap())
            .await
            .unwrap();
    }
    let names =
        |l: kube::core::ObjectList<Pod>| l.items.iter().map(|p| p.name_any()).collect::<Vec<_>>();
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName=n1"))
                .await
                .unwrap()
        ),
        ["p1"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName="))
                .await
                .unwrap()
        ),
        ["p3"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("status.phase=Pending,metadata.name!=p1"))
                .await
                .unwrap()
        ),
        ["p2", "p3"]
    );
    let st = api_status(
        pods.list(&ListParams::default().fields("spec.bogus=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (st.code, st.message.as_str()),
        (400, "field label not supported: spec.bogus")
    );
    // Deleting the namespace deletes its contents, then the namespace itself.
    nss.delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while nss.get_opt("scratch").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace never finished terminating"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        Api::<Pod>::all(client)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn json_patch_strategic_merge_and_dry_run() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x/one"]},
        "spec": {"containers": [{"name": "c", "image": "i1"}, {"name": "d", "image": "i2"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    // Strategic merge: containers merge by name, finalizers are a set.
    let smp = json!({"metadata": {"finalizers": ["x/two"]}, "spec": {"containers": [{"name": "d", "image": "i3"}]}});
    let out = pods
        .patch("p", &PatchParams::default(), &Patch::Strategic(&smp))
        .await
        .unwrap();
    let images: Vec<_> = out
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.image.unwrap())
        .collect();
    assert_eq!(images, ["i1", "i3"]);
    assert_eq!(out.metadata.finalizers.unwrap(), ["x/one", "x/two"]);
    // JSON patch, including a failing test operation.
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/metadata/labels/b", "value": "2"}]))
            .unwrap();
    let out = pods
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(out.labels().get("b").map(String::as_str), Some("2"));
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/metadata/labels/a", "value": "9"}]))
            .unwrap();
    assert_eq!(
        api_status(
            pods.patch("p", &PatchParams::default(), &Patch::<()>::Json(jp))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    // dryRun: validated and answered, not stored.
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dry"}})).unwrap();
    cms.create(
        &PostParams {
            dry_run: true,
            ..PostParams::default()
        },
        &cm,
    )
    .await
    .unwrap();
    assert!(cms.get_opt("dry").await.unwrap().is_none());
}
