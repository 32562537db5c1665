//! The gateway in Kubernetes mode against the API test server: TokenReview for the caller's
//! token, SubjectAccessReview for `get packetcaptures/files`, PacketCapture objects for
//! existence, uid and status, S3 credentials from a Secret — and the real S3 server.

mod common;

use std::{collections::BTreeMap, sync::Arc};

use common::{
    fixture::{Stored, populate_with, serve_counting},
    gateway::{TestGateway, s3_store},
    matrix,
    objects::{UID_C, bytes, key, seed},
};
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use nightcap_api::{PacketCapture, PacketCaptureSpec};
use nightcap_gateway::{
    auth::KubernetesAccess, captures::KubernetesCaptures, resolve_secret_credentials,
};
use nightcap_storage::{
    FileMeta, Store, StoreConfig,
    config::{S3Config, S3Credentials},
};
use nightcap_testcluster::{ApiServer, Policy, Rule, User};
use nightcap_testsupport::S3Server;
use serde_json::{Value, json};

const GATEWAY_NS: &str = "nightcap-system";

fn files_rule(namespaces: &[&str]) -> Rule {
    Rule::new(["get"], ["nightcap.dev"], ["packetcaptures/files"])
        .in_namespaces(namespaces.iter().copied())
}

fn policy() -> Policy {
    Policy::new()
        .user(User::new("alice").rule(files_rule(&["team-a"])))
        .user(User::new("bob").rule(files_rule(&["team-b"])))
        // Cluster-wide reader of capture files.
        .user(User::new("carol").rule(Rule::new(
            ["get"],
            ["nightcap.dev"],
            ["packetcaptures/files"],
        )))
        // May create and read captures in team-a, but not their files: a separate right.
        .user(
            User::new("dave").rule(
                Rule::new(
                    ["get", "list", "create"],
                    ["nightcap.dev"],
                    ["packetcaptures"],
                )
                .in_namespaces(["team-a"]),
            ),
        )
        .service_account(
            GATEWAY_NS,
            "gateway",
            vec![
                Rule::new(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
                Rule::new(
                    ["create"],
                    ["authorization.k8s.io"],
                    ["subjectaccessreviews"],
                ),
                Rule::new(["get", "list"], ["nightcap.dev"], ["packetcaptures"]),
                Rule::new(["get"], [""], ["secrets"])
                    .in_namespaces([GATEWAY_NS])
                    .names(["s3-credentials"]),
            ],
        )
}

struct Fx {
    api: ApiServer,
    _s3: S3Server,
    store: Store,
    stored: Stored,
    gw: TestGateway,
    admin: kube::Client,
}

async fn create_capture(admin: &kube::Client, ns: &str, name: &str) -> String {
    let api: Api<PacketCapture> = Api::namespaced(admin.clone(), ns);
    let pc = PacketCapture::new(
        name,
        PacketCaptureSpec {
            duration: Some("5m".into()),
            ..Default::default()
        },
    );
    api.create(&PostParams::default(), &pc)
        .await
        .unwrap_or_else(|e| panic!("create packetcapture {ns}/{name}: {e}"))
        .metadata
        .uid
        .expect("uid assigned by the server")
}

async fn fixture() -> Fx {
    let api = ApiServer::start(policy()).await.expect("API server starts");
    for crd in nightcap_api::crds() {
        api.register_crd(&crd).expect("register CRD");
    }
    let admin = api.admin_client().expect("admin client");
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for ns in ["team-a", "team-b", "team-c", GATEWAY_NS] {
        let obj: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        namespaces
            .create(&PostParams::default(), &obj)
            .await
            .expect("create namespace");
    }
    let uid_web = create_capture(&admin, "team-a", "web").await;
    let uid_db = create_capture(&admin, "team-b", "db").await;

    let s3 = S3Server::start();
    let store = s3_store(&s3, "k8s");
    let stored = populate_with(&store, &uid_web, &uid_db).await;
    // An earlier incarnation of team-a/web: must never be served for the current object.
    let stale = key("team-a", "web", UID_C, "node-9", 1);
    seed(
        store.store.clone(),
        &store.prefix,
        &stale,
        &bytes(10, 9),
        &FileMeta::default(),
    )
    .await;

    let sa = api
        .client_with_token(&api.service_account_token(GATEWAY_NS, "gateway"))
        .expect("gateway client");
    let access = Arc::new(KubernetesAccess::new(sa.clone(), vec![]));
    let (gw, _) = serve_counting(&store, access, |_| Arc::new(KubernetesCaptures::new(sa))).await;
    Fx {
        api,
        _s3: s3,
        store,
        stored,
        gw,
        admin,
    }
}

fn token(fx: &Fx, user: &str) -> String {
    fx.api.token_for(user).expect("known user")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_with_token_and_subject_access_reviews() {
    let fx = fixture().await;
    let rights: [(&str, &[&str]); 4] = [
        ("alice", &["team-a"]),
        ("bob", &["team-b"]),
        ("carol", &["team-a", "team-b", "team-c"]),
        ("dave", &[]),
    ];
    let tokens: Vec<String> = rights.iter().map(|(u, _)| token(&fx, u)).collect();
    let checks: Vec<_> = rights
        .iter()
        .map(|(_, r)| move |ns: &str| r.contains(&ns))
        .collect();
    let callers: Vec<matrix::Caller> = rights
        .iter()
        .zip(&tokens)
        .zip(&checks)
        .map(|(((u, _), t), f)| matrix::Caller {
            name: u,
            token: t,
            may_read: f,
        })
        .collect();
    let cells = matrix::run(
        &fx.gw.base,
        &callers,
        &["team-a", "team-b", "team-c"],
        &fx.stored,
        fx.store.prefix.as_str(),
    )
    .await;
    matrix::print(&cells);
    // A token of the gateway itself (allowed to read PacketCaptures, not their files) gets 403.
    let sa = fx.api.service_account_token(GATEWAY_NS, "gateway");
    let r = reqwest::Client::new()
        .get(format!(
            "{}/v1/namespaces/team-a/packetcaptures/web/files",
            fx.gw.base
        ))
        .bearer_auth(sa)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_metadata_is_merged_and_share_links_are_bound_to_the_uid() {
    let fx = fixture().await;
    let web_key = fx
        .stored
        .keys()
        .find(|k| k.contains("/team-a/web/") && k.contains("/node-2/"))
        .expect("key")
        .clone();
    let api: Api<PacketCapture> = Api::namespaced(fx.admin.clone(), "team-a");
    let status = json!({"status": {"phase": "Capturing", "nodes": {"node-2": {"files": [
        {"key": web_key, "pods": ["team-a/web-7", "team-a/web-8"], "packets": 99,
         "start": "2026-11-22T01:00:00Z", "end": "2026-11-22T01:05:00Z"}
    ]}}}});
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch status");

    let http = reqwest::Client::new();
    let alice = token(&fx, "alice");
    let v: Value = http
        .get(format!(
            "{}/v1/namespaces/team-a/packetcaptures/web/files",
            fx.gw.base
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let f = v["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["key"] == web_key.as_str())
        .expect("file");
    assert_eq!(
        f["pods"],
        json!(["team-a/web-7", "team-a/web-8"]),
        "status wins over attributes"
    );
    assert_eq!(f["packets"], 99);
    assert_eq!(f["end"], "2026-11-22T01:05:00Z");
    assert!(
        f["sha256"].as_str().is_some_and(|s| s.len() == 64),
        "sha256 from object attributes"
    );

    let link: Value = http
        .post(format!(
            "{}/v1/namespaces/team-a/packetcaptures/web/links",
            fx.gw.base
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    let url = link["url"].as_str().expect("url").to_string();
    assert_eq!(
        reqwest::get(&url).await.expect("GET").status().as_u16(),
        200
    );
    // Delete and re-create the capture: same name, new uid; the old link must not serve it.
    api.delete("web", &Default::default())
        .await
        .expect("delete");
    create_capture(&fx.admin, "team-a", "web").await;
    assert_eq!(
        reqwest::get(&url).await.expect("GET").status().as_u16(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_credentials_come_from_a_kubernetes_secret() {
    let api = ApiServer::start(policy()).await.expect("API server starts");
    let admin = api.admin_client().expect("admin");
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": GATEWAY_NS}})).expect("ns");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let s3 = S3Server::start();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("s3-credentials".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                "AWS_ACCESS_KEY_ID".to_string(),
                ByteString(s3.access_key().as_bytes().to_vec()),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                ByteString(format!("{}\n", s3.secret_key()).into_bytes()),
            ),
        ])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(admin, GATEWAY_NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let config = StoreConfig::S3(S3Config {
        bucket: s3.bucket().into(),
        prefix: "from-secret".into(),
        region: Some(s3.region().into()),
        endpoint: Some(s3.endpoint()),
        path_style: None,
        allow_http: true,
        unsigned_payload: None,
        credentials: S3Credentials::Secret {
            name: "s3-credentials".into(),
            namespace: Some(GATEWAY_NS.into()),
            access_key_id_key: "AWS_ACCESS_KEY_ID".into(),
            secret_access_key_key: "AWS_SECRET_ACCESS_KEY".into(),
            session_token_key: "AWS_SESSION_TOKEN".into(),
        },
    });
    assert!(
        config.open().is_err(),
        "an unresolved Secret reference cannot open"
    );
    let sa = api
        .client_with_token(&api.service_account_token(GATEWAY_NS, "gateway"))
        .expect("client");
    let resolved = resolve_secret_credentials(config.clone(), &sa)
        .await
        .expect("resolve");
    let store = resolved.open().expect("open");
    let k = key("team-a", "web", UID_C, "node-1", 1);
    seed(
        store.store.clone(),
        &store.prefix,
        &k,
        b"through the secret",
        &FileMeta::default(),
    )
    .await;

    // A Secret the gateway may not read is a clear error.
    let StoreConfig::S3(mut other) = config else {
        unreachable!("built as S3 above")
    };
    other.credentials = S3Credentials::Secret {
        name: "not-allowed".into(),
        namespace: Some(GATEWAY_NS.into()),
        access_key_id_key: "a".into(),
        secret_access_key_key: "b".into(),
        session_token_key: "c".into(),
    };
    let err = resolve_secret_credentials(StoreConfig::S3(other), &sa)
        .await
        .expect_err("forbidden");
    assert!(err.to_string().contains("not-allowed"), "{err}");
}
