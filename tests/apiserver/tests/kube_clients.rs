//! kube-rs `Api`, `watcher`, `reflector`, `Controller` and discovery against the test server.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{
        DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent,
        WatchParams,
    },
    discovery::Discovery,
    runtime::{Controller, WatchStreamExt, controller::Action, reflector, watcher, watcher::Event},
};
use nightcap_testcluster::{ApiServer, Policy};
use serde_json::json;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..ConfigMap::default()
    }
}

async fn server() -> (ApiServer, Client) {
    let s = ApiServer::start(Policy::new())
        .await
        .expect("server starts");
    let c = s.admin_client().expect("admin client");
    (s, c)
}

#[tokio::test]
async fn api_crud_and_optimistic_concurrency() {
    let (_s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = api
        .create(&PostParams::default(), &cm("one", &[("app", "a")]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    let dup = api
        .create(&PostParams::default(), &cm("one", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&dup, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{dup:?}"
    );

    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "v2".to_string())].into());
    let updated = api
        .replace("one", &PostParams::default(), &changed)
        .await
        .unwrap();
    let rv2: u64 = updated.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    // Replacing with the stale resourceVersion conflicts.
    let stale = api
        .replace("one", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert!(
        matches!(&stale, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{stale:?}"
    );

    let mut gen_named = cm("", &[("app", "b")]);
    gen_named.metadata.name = None;
    gen_named.metadata.generate_name = Some("gen-".into());
    let g = api
        .create(&PostParams::default(), &gen_named)
        .await
        .unwrap();
    assert!(
        g.name_any().starts_with("gen-") && g.name_any().len() == 9,
        "{}",
        g.name_any()
    );

    let listed = api
        .list(&ListParams::default().labels("app=a"))
        .await
        .unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|c| c.name_any())
            .collect::<Vec<_>>(),
        vec!["one"]
    );
    let paged = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(paged.items.len(), 1);
    let rest = api
        .list(
            &ListParams::default()
                .limit(1)
                .continue_token(paged.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0].name_any(), paged.items[0].name_any());

    api.delete("one", &DeleteParams::default()).await.unwrap();
    let gone = api.get("one").await.unwrap_err();
    assert!(
        matches!(&gone, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{gone:?}"
    );
    assert!(api.get_opt("one").await.unwrap().is_none());

    let in_missing_ns: Api<ConfigMap> = Api::namespaced(api.clone().into_client(), "nope");
    let err = in_missing_ns
        .create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn raw_watch_from_old_version_gets_410_error_event() {
    let (s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let c = api
        .create(&PostParams::default(), &cm("w", &[]))
        .await
        .unwrap();
    let old = c.resource_version().unwrap();
    s.compact();
    let mut stream = api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_streams_changes_and_relists_after_410() {
    let (s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("before", &[]))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default().timeout(30)).boxed();
    let mut seen_init_done = 0;
    let mut applied = Vec::new();
    let step = async |events: &mut futures::stream::BoxStream<
        '_,
        Result<Event<ConfigMap>, watcher::Error>,
    >| {
        tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("watcher event in time")
            .unwrap()
    };
    while seen_init_done == 0 {
        match step(&mut events).await {
            Ok(Event::InitApply(o)) => applied.push(o.name_any()),
            Ok(Event::InitDone) => seen_init_done += 1,
            _ => {}
        }
    }
    assert_eq!(applied, vec!["before"]);
    api.create(&PostParams::default(), &cm("after", &[]))
        .await
        .unwrap();
    loop {
        if let Ok(Event::Apply(o)) = step(&mut events).await {
            assert_eq!(o.name_any(), "after");
            break;
        }
    }
    // Compaction: the watcher's version is gone, so it must get 410 and re-list.
    s.compact();
    let mut saw_410 = false;
    loop {
        match step(&mut events).await {
            Err(watcher::Error::WatchError(e)) if e.code == 410 => saw_410 = true,
            Ok(Event::Init) => break,
            _ => {}
        }
    }
    assert!(saw_410);
    let mut relisted = Vec::new();
    loop {
        match step(&mut events).await {
            Ok(Event::InitApply(o)) => relisted.push(o.name_any()),
            Ok(Event::InitDone) => break,
            _ => {}
        }
    }
    relisted.sort();
    assert_eq!(relisted, vec!["after", "before"]);
}

#[tokio::test]
async fn watcher_with_streaming_lists_and_selectors() {
    let (_s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("a", &[("pick", "yes")]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("b", &[("pick", "no")]))
        .await
        .unwrap();
    let cfg = watcher::Config::default()
        .streaming_lists()
        .labels("pick=yes");
    let mut events = watcher(api.clone(), cfg).boxed();
    let mut names = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Event::InitApply(o) => names.push(o.name_any()),
            Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(names, vec!["a"]);
    // "a" stops matching: a label-selected watch reports it as deleted.
    let patch = json!({"metadata": {"labels": {"pick": "no"}}});
    api.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    loop {
        if let Event::Delete(o) = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            assert_eq!(o.name_any(), "a");
            break;
        }
    }
}

#[tokio::test]
async fn reflector_store_follows_the_server() {
    let (_s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(api.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    api.create(&PostParams::default(), &cm("r1", &[]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("r2", &[]))
        .await
        .unwrap();
    api.delete("r1", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut names: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
        names.sort();
        if names == ["r2"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector never converged: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
}

#[derive(Debug)]
struct ReconcileError(kube::Error);
impl std::fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl std::error::Error for ReconcileError {}

/// A tiny controller: every ConfigMap gets an owned Secret with the same name.
async fn reconcile(cm: Arc<ConfigMap>, client: Arc<Client>) -> Result<Action, ReconcileError> {
    let ns = cm.namespace().expect("configmaps are namespaced");
    let secrets: Api<Secret> = Api::namespaced((*client).clone(), &ns);
    let owner = cm
        .controller_owner_ref(&())
        .expect("the configmap has a name and uid");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(cm.name_any()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        string_data: Some([("from".to_string(), cm.name_any())].into()),
        ..Secret::default()
    };
    secrets
        .patch(
            &cm.name_any(),
            &PatchParams::apply("tiny-controller").force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(ReconcileError)?;
    Ok(Action::await_change())
}

#[tokio::test]
async fn controller_reconciles_and_owned_objects_are_collected() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let ctl = Controller::new(cms.clone(), watcher::Config::default())
        .owns(secrets.clone(), watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(client.clone()),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(ctl);
    cms.create(&PostParams::default(), &cm("ctl", &[]))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let secret = loop {
        if let Some(s) = secrets.get_opt("ctl").await.unwrap() {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "controller did not create the secret"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(secret.data.unwrap()["from"].0, b"ctl");
    task.abort();
    // Background deletion of the owner garbage-collects the secret.
    cms.delete("ctl", &DeleteParams::background())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while secrets.get_opt("ctl").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "owned secret was not garbage-collected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn discovery_finds_builtin_resources() {
    let (_s, client) = server().await;
    for aggregated in [false, true] {
        let d = Discovery::new(client.clone());
        let d = if aggregated {
            d.run_aggregated().await.unwrap()
        } else {
            d.run().await.unwrap()
        };
        let batch = d.get("batch").expect("batch group");
        let (ar, caps) = batch.recommended_kind("Job").expect("Job kind");
        assert_eq!(ar.plural, "jobs");
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        assert!(
            caps.subresources
                .iter()
                .any(|(s, _)| s.plural == "jobs/status" || s.plural == "status"),
            "{:?}",
            caps.subresources
        );
        let core = d.get("").expect("core group");
        assert!(core.recommended_kind("Pod").is_some());
        assert!(d.get("coordination.k8s.io").is_some());
        assert!(d.get("events.k8s.io").is_some());
    }
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.minor, "33");
}
