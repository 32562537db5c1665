//! Authentication, authorisation, TokenReview and SubjectAccessReview from the test policy.

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        SubjectAccessReview, SubjectAccessReviewSpec,
    },
    core::v1::{ConfigMap, Pod},
};
use kube::api::{Api, ListParams, PostParams};
use nightcap_testcluster::{ApiServer, Policy, Rule, User};

fn policy() -> Policy {
    Policy::new()
        .user(
            User::new("alice")
                .rule(
                    Rule::new(["get", "list", "watch"], [""], ["configmaps"])
                        .in_namespaces(["team-a"]),
                )
                .rule(
                    Rule::new(["get"], ["nightcap.dev"], ["packetcaptures/files"])
                        .in_namespaces(["team-a"]),
                ),
        )
        .service_account(
            "nightcap-system",
            "gateway",
            vec![
                Rule::new(
                    ["create"],
                    ["authorization.k8s.io"],
                    ["subjectaccessreviews"],
                ),
                Rule::new(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
            ],
        )
}

fn sar(
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    sub: Option<&str>,
    ns: &str,
) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: sub.map(Into::into),
                namespace: Some(ns.into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

#[tokio::test]
async fn forbidden_and_unauthorized_look_like_the_real_server() {
    let s = ApiServer::start(policy()).await.unwrap();
    let alice = s.client_for("alice").unwrap();
    let ns = s.admin_client().unwrap();
    let admin_ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns);
    admin_ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "team-a"}})).unwrap(),
        )
        .await
        .unwrap();

    let ok: Api<ConfigMap> = Api::namespaced(alice.clone(), "team-a");
    ok.list(&ListParams::default()).await.unwrap();

    let other: Api<ConfigMap> = Api::namespaced(alice.clone(), "default");
    let err = other.list(&ListParams::default()).await.unwrap_err();
    let kube::Error::Api(st) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!((st.code, st.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        st.message,
        "configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    let pods: Api<Pod> = Api::namespaced(alice.clone(), "team-a");
    let err = pods.get("x").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403
        && s.message.starts_with("pods \"x\" is forbidden: User \"alice\" cannot get resource \"pods\"")),
        "{err:?}"
    );

    let bad = s.client_with_token("not-a-token").unwrap();
    let err = Api::<ConfigMap>::namespaced(bad, "team-a")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401 && s.reason == "Unauthorized"),
        "{err:?}"
    );
}

#[tokio::test]
async fn subject_access_review_and_token_review_answer_per_policy() {
    let s = ApiServer::start(policy()).await.unwrap();
    let gw = s
        .client_for("system:serviceaccount:nightcap-system:gateway")
        .unwrap();
    let sars: Api<SubjectAccessReview> = Api::all(gw.clone());
    let cases = [
        (
            sar(
                "alice",
                "get",
                "nightcap.dev",
                "packetcaptures",
                Some("files"),
                "team-a",
            ),
            true,
        ),
        (
            sar(
                "alice",
                "get",
                "nightcap.dev",
                "packetcaptures",
                Some("files"),
                "team-b",
            ),
            false,
        ),
        (
            sar(
                "alice",
                "get",
                "nightcap.dev",
                "packetcaptures",
                None,
                "team-a",
            ),
            false,
        ),
        (sar("alice", "list", "", "configmaps", None, "team-a"), true),
        (sar("bob", "list", "", "configmaps", None, "team-a"), false),
        (
            sar(
                "admin",
                "delete",
                "nightcap.dev",
                "packetcaptures",
                None,
                "team-b",
            ),
            false,
        ),
    ];
    for (review, want) in cases {
        let attrs = format!("{:?}", review.spec.resource_attributes);
        let out = sars.create(&PostParams::default(), &review).await.unwrap();
        assert_eq!(out.status.unwrap().allowed, want, "{attrs}");
    }
    // With the admin's groups the same request is allowed.
    let mut with_groups = sar(
        "admin",
        "delete",
        "nightcap.dev",
        "packetcaptures",
        None,
        "team-b",
    );
    with_groups.spec.groups = Some(vec!["system:masters".into()]);
    assert!(
        sars.create(&PostParams::default(), &with_groups)
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    );

    // alice may not create SubjectAccessReviews herself, but may ask about herself.
    let alice = s.client_for("alice").unwrap();
    let err = Api::<SubjectAccessReview>::all(alice.clone())
        .create(
            &PostParams::default(),
            &sar("alice", "get", "", "pods", None, "x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err:?}"
    );
    let ssar = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some("list".into()),
                resource: Some("configmaps".into()),
                namespace: Some("team-a".into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let out = Api::<SelfSubjectAccessReview>::all(alice)
        .create(&PostParams::default(), &ssar)
        .await
        .unwrap();
    assert!(out.status.unwrap().allowed);

    let trs: Api<TokenReview> = Api::all(gw);
    let review = |token: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            ..TokenReviewSpec::default()
        },
        ..TokenReview::default()
    };
    let good = trs
        .create(
            &PostParams::default(),
            &review(&s.token_for("alice").unwrap()),
        )
        .await
        .unwrap();
    let st = good.status.unwrap();
    assert_eq!(st.authenticated, Some(true));
    let user = st.user.unwrap();
    assert_eq!(user.username.as_deref(), Some("alice"));
    assert!(
        user.groups
            .unwrap()
            .contains(&"system:authenticated".to_string())
    );
    let bad = trs
        .create(&PostParams::default(), &review("forged"))
        .await
        .unwrap();
    assert_eq!(bad.status.unwrap().authenticated, Some(false));
}
