//! The install (`manifests/`, read with `manifests::install_documents`) as a test cluster sees
//! it: who may do what once it is applied, the objects valid for Kubernetes 1.33 and the CRD
//! schemas, the same objects `kubectl kustomize` renders, and the cluster examples
//! (`examples/cluster/`) valid against the CRDs and nightcap's own validation.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use nightcap_api::{
    CaptureSchedule, CaptureTrigger, PacketCapture,
    validation::{ValidationOptions, validate_packet_capture, validate_schedule, validate_trigger},
};
use nightcap_testcluster::{
    ApiServer, Policy, manifests::install_documents, policy::Attributes, schema_check,
};
use serde::Deserialize as _;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn install() -> Vec<Value> {
    install_documents(&repo().join("manifests")).expect("manifests/ reads")
}

fn example(name: &str) -> Vec<Value> {
    let path = repo().join("examples/cluster").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Users bound directly (not through groups) in storefront.
const USER_BINDINGS: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: erin-edit, namespace: storefront}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: erin}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: fred-files, namespace: storefront}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: nightcap-files-reader}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: fred}]
"#;

/// The install plus the storefront RoleBindings of examples/cluster/storefront-access.yaml and
/// [`USER_BINDINGS`] (a policy sees only the roles of the documents it is given at once).
fn policy() -> Policy {
    let mut docs = install();
    docs.extend(example("storefront-access.yaml"));
    docs.extend(
        serde_yaml::Deserializer::from_str(USER_BINDINGS)
            .map(|d| Value::deserialize(d).expect("YAML")),
    );
    Policy::new()
        .with_rbac_documents(&docs)
        .expect("every binding's role is defined")
}

const SCHEDULER: &str = "system:serviceaccount:nightcap-system:nightcap-scheduler";
const TRIGGERS: &str = "system:serviceaccount:nightcap-system:nightcap-triggers";
const GATEWAY: &str = "system:serviceaccount:nightcap-system:nightcap-gateway";
const CAPTURE: &str = "system:serviceaccount:nightcap-captures:nightcap-capture";

/// `resource` is `plural[/subresource][#name]`.
fn request(verb: &str, group: &str, resource: &str, ns: &str) -> Attributes {
    let (resource, name) = resource.split_once('#').unwrap_or((resource, ""));
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    Attributes {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Attributes::default()
    }
}

/// Whether `user` (a service account or a person with `groups`) may do it.
fn may(p: &Policy, user: &str, groups: &[&str], a: &Attributes) -> bool {
    let mut g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
    g.push("system:authenticated".into());
    if let Some(info) = p.users().iter().find(|u| u.name == user) {
        g.extend(info.groups.iter().cloned());
    }
    p.authorize(user, &g, a).is_ok()
}

#[test]
fn service_accounts_have_what_their_components_need_and_no_more() {
    let p = policy();
    let cases: &[(&str, &str, &str, &str, &str, bool)] = &[
        // The scheduler runs capture Jobs in nightcap-captures and reads its own Pod's image.
        (
            SCHEDULER,
            "create",
            "batch",
            "jobs",
            "nightcap-captures",
            true,
        ),
        (
            SCHEDULER,
            "delete",
            "batch",
            "jobs",
            "nightcap-captures",
            true,
        ),
        (SCHEDULER, "get", "", "pods", "nightcap-system", true),
        (
            SCHEDULER,
            "patch",
            "nightcap.dev",
            "packetcaptures/status",
            "storefront",
            true,
        ),
        (
            SCHEDULER,
            "update",
            "coordination.k8s.io",
            "leases#nightcap-scheduler",
            "nightcap-system",
            true,
        ),
        (
            SCHEDULER,
            "update",
            "coordination.k8s.io",
            "leases#someone-else",
            "nightcap-system",
            false,
        ),
        (
            SCHEDULER,
            "update",
            "coordination.k8s.io",
            "leases#nightcap-scheduler",
            "storefront",
            false,
        ),
        (SCHEDULER, "get", "", "secrets", "nightcap-captures", false),
        (SCHEDULER, "list", "", "secrets", "nightcap-system", false),
        (SCHEDULER, "create", "", "pods", "nightcap-captures", false),
        (
            SCHEDULER,
            "create",
            "nightcap.dev",
            "packetcaptures",
            "storefront",
            false,
        ),
        // The capture Job reports into its capture's status and nothing else.
        (
            CAPTURE,
            "patch",
            "nightcap.dev",
            "packetcaptures/status",
            "storefront",
            true,
        ),
        (CAPTURE, "watch", "", "pods", "storefront", true),
        (
            CAPTURE,
            "create",
            "batch",
            "jobs",
            "nightcap-captures",
            false,
        ),
        (CAPTURE, "get", "", "secrets", "nightcap-captures", false),
        (
            CAPTURE,
            "patch",
            "nightcap.dev",
            "packetcaptures",
            "storefront",
            false,
        ),
        // Triggers create captures, never Jobs or pods.
        (
            TRIGGERS,
            "create",
            "nightcap.dev",
            "packetcaptures",
            "storefront",
            true,
        ),
        (
            TRIGGERS,
            "update",
            "nightcap.dev",
            "capturetriggers/status",
            "storefront",
            true,
        ),
        (
            TRIGGERS,
            "patch",
            "nightcap.dev",
            "captureschedules/status",
            "storefront",
            true,
        ),
        (TRIGGERS, "create", "batch", "jobs", "storefront", false),
        (
            TRIGGERS,
            "update",
            "nightcap.dev",
            "capturetriggers",
            "storefront",
            false,
        ),
        (TRIGGERS, "get", "", "secrets", "nightcap-system", false),
        // The gateway reviews tokens and access, reads captures; its store Secret arrives by
        // envFrom, so it has no right on Secrets.
        (
            GATEWAY,
            "create",
            "authentication.k8s.io",
            "tokenreviews",
            "",
            true,
        ),
        (
            GATEWAY,
            "create",
            "authorization.k8s.io",
            "subjectaccessreviews",
            "",
            true,
        ),
        (
            GATEWAY,
            "list",
            "nightcap.dev",
            "packetcaptures",
            "storefront",
            true,
        ),
        (GATEWAY, "get", "", "secrets", "nightcap-system", false),
        (
            GATEWAY,
            "get",
            "nightcap.dev",
            "packetcaptures/files",
            "storefront",
            false,
        ),
        (
            GATEWAY,
            "patch",
            "nightcap.dev",
            "packetcaptures",
            "storefront",
            false,
        ),
    ];
    for &(user, verb, group, resource, ns, want) in cases {
        assert_eq!(
            may(&p, user, &[], &request(verb, group, resource, ns)),
            want,
            "{user} {verb} {group}/{resource} in {ns:?}"
        );
    }
}

#[test]
fn edit_grants_captures_but_reading_files_is_its_own_binding() {
    let p = policy();
    let dev = ("dana", &["storefront-developers"][..]);
    let oncall = ("oscar", &["storefront-oncall"][..]);
    let nobody = ("nina", &[][..]);
    let erin = ("erin", &[][..]);
    let fred = ("fred", &[][..]);
    let cases = [
        (erin, "create", "packetcaptures", "storefront", true),
        (erin, "get", "packetcaptures/files", "storefront", false),
        (fred, "get", "packetcaptures/files", "storefront", true),
        (fred, "create", "packetcaptures", "storefront", false),
        (dev, "create", "packetcaptures", "storefront", true),
        (dev, "delete", "capturetriggers", "storefront", true),
        (dev, "create", "captureschedules", "storefront", true),
        (dev, "get", "packetcaptures/files", "storefront", false),
        (dev, "create", "packetcaptures", "payments", false),
        (dev, "patch", "packetcaptures/status", "storefront", false),
        (oncall, "get", "packetcaptures/files", "storefront", true),
        (oncall, "get", "packetcaptures/files", "payments", false),
        (oncall, "create", "packetcaptures", "storefront", false),
        (nobody, "get", "packetcaptures", "storefront", false),
        (nobody, "get", "packetcaptures/files", "storefront", false),
    ];
    for ((user, groups), verb, resource, ns, want) in cases {
        assert_eq!(
            may(
                &p,
                user,
                groups,
                &request(verb, "nightcap.dev", resource, ns)
            ),
            want,
            "{user} ({groups:?}) {verb} {resource} in {ns}"
        );
    }
    // Everyone signed in may read where the gateway is, and nothing else in nightcap-system.
    let cm = |name: &str| request("get", "", &format!("configmaps#{name}"), "nightcap-system");
    assert!(may(&p, "nina", &[], &cm("nightcap-gateway")));
    assert!(!may(&p, "nina", &[], &cm("nightcap-triggers")));
}

/// Every (group, resource, verb) a subject of the install holds, with resource names.
fn grants(p: &Policy, user: &str) -> BTreeSet<String> {
    let u = p
        .users()
        .iter()
        .find(|u| u.name == user)
        .unwrap_or_else(|| panic!("{user} is bound by the install"));
    let mut out = BTreeSet::new();
    for r in &u.rules {
        for g in &r.api_groups {
            for res in &r.resources {
                for v in &r.verbs {
                    let names = if r.resource_names.is_empty() {
                        String::new()
                    } else {
                        format!(" {:?}", r.resource_names)
                    };
                    out.insert(format!("{g}/{res}:{v}{names}"));
                }
            }
        }
    }
    out
}

fn expect(spec: &[Grant]) -> BTreeSet<String> {
    spec.iter()
        .flat_map(|(g, res, verbs)| {
            verbs
                .split_whitespace()
                .map(move |v| match res.split_once(' ') {
                    Some((res, names)) => format!("{g}/{res}:{v} {names}"),
                    None => format!("{g}/{res}:{v}"),
                })
        })
        .collect()
}

/// (API group, resource with optional resource names, space-separated verbs).
type Grant<'a> = (&'a str, &'a str, &'a str);

#[test]
fn nobody_holds_more_than_the_manifests_list() {
    let p = Policy::new()
        .with_rbac_documents(&install())
        .expect("every binding's role is defined");
    let table: &[(&str, &[Grant])] = &[
        (
            SCHEDULER,
            &[
                (
                    "nightcap.dev",
                    "packetcaptures",
                    "get list watch patch update",
                ),
                ("nightcap.dev", "packetcaptures/status", "get patch update"),
                ("nightcap.dev", "packetcaptures/finalizers", "update"),
                ("batch", "jobs", "get list watch create patch delete"),
                ("", "pods", "get list watch"),
                ("", "nodes", "get list watch"),
                ("events.k8s.io", "events", "create patch"),
                ("coordination.k8s.io", "leases", "create"),
                (
                    "coordination.k8s.io",
                    "leases [\"nightcap-scheduler\"]",
                    "get update",
                ),
            ],
        ),
        (
            TRIGGERS,
            &[
                (
                    "nightcap.dev",
                    "packetcaptures",
                    "get list watch create patch delete",
                ),
                ("nightcap.dev", "packetcaptures/status", "patch"),
                ("nightcap.dev", "capturetriggers", "get list watch"),
                ("nightcap.dev", "captureschedules", "get list watch"),
                ("nightcap.dev", "capturetriggers/status", "get update"),
                ("nightcap.dev", "captureschedules/status", "patch"),
                ("nightcap.dev", "captureschedules/finalizers", "update"),
                ("events.k8s.io", "events", "create patch"),
            ],
        ),
        (
            GATEWAY,
            &[
                ("authentication.k8s.io", "tokenreviews", "create"),
                ("authorization.k8s.io", "subjectaccessreviews", "create"),
                ("nightcap.dev", "packetcaptures", "get list watch"),
            ],
        ),
        (
            CAPTURE,
            &[
                ("nightcap.dev", "packetcaptures", "get list watch"),
                ("nightcap.dev", "packetcaptures/status", "get patch"),
                ("", "pods", "get list watch"),
            ],
        ),
    ];
    for (user, spec) in table {
        assert_eq!(grants(&p, user), expect(spec), "{user}");
    }
    // The install binds exactly these service accounts and no user.
    let bound: BTreeSet<&str> = p
        .users()
        .iter()
        .map(|u| u.name.as_str())
        .filter(|n| *n != nightcap_testcluster::policy::ADMIN)
        .collect();
    assert_eq!(
        bound,
        BTreeSet::from([SCHEDULER, TRIGGERS, GATEWAY, CAPTURE]),
        "subjects bound by the install"
    );
    // No rule of the install holds a wildcard.
    for u in p.users().iter().filter(|u| u.name != "admin") {
        for r in &u.rules {
            assert!(
                ![&r.verbs, &r.api_groups, &r.resources]
                    .iter()
                    .any(|l| l.iter().any(|x| x.contains('*'))),
                "{}: wildcard in {r:?}",
                u.name
            );
        }
    }
}

#[tokio::test]
async fn install_objects_and_cluster_examples_pass_the_schemas() {
    let server = ApiServer::start(Policy::new())
        .await
        .expect("API test server");
    for crd in nightcap_api::crds() {
        server.register_crd(&crd).expect("CRD registers");
    }
    let mut objects = install();
    for file in [
        "storefront.yaml",
        "storefront-access.yaml",
        "alertmanager-webhook-token.yaml",
    ] {
        objects.extend(example(file));
    }
    // nightcap's own validation, as the scheduler and triggers apply it.
    let opts = ValidationOptions::default();
    let mut kinds = BTreeSet::new();
    for o in &objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let checked = match kind {
            "PacketCapture" => validate_packet_capture(
                &serde_json::from_value::<PacketCapture>(o.clone()).expect("PacketCapture"),
                &opts,
            ),
            "CaptureTrigger" => validate_trigger(
                &serde_json::from_value::<CaptureTrigger>(o.clone()).expect("CaptureTrigger"),
                &opts,
            ),
            "CaptureSchedule" => validate_schedule(
                &serde_json::from_value::<CaptureSchedule>(o.clone()).expect("CaptureSchedule"),
                &opts,
            ),
            _ => Ok(()),
        };
        checked.unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
        kinds.insert(kind.to_string());
    }
    for kind in [
        "PacketCapture",
        "CaptureTrigger",
        "CaptureSchedule",
        "Deployment",
    ] {
        assert!(kinds.contains(kind), "no {kind} checked: {kinds:?}");
    }
    if !schema_check::kubernetes_validate_available() {
        println!(
            "SKIP (built-in kinds): kubernetes-validate is not installed (pip install kubernetes-validate)"
        );
        return;
    }
    server
        .check_objects(&objects)
        .expect("the install and the examples pass kubernetes-validate --strict and the CRDs");
}

fn identities(docs: &[Value]) -> BTreeSet<(String, String, String)> {
    docs.iter()
        .map(|d| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&d["kind"]),
                s(&d["metadata"]["namespace"]),
                s(&d["metadata"]["name"]),
            )
        })
        .collect()
}

#[test]
fn install_documents_are_what_kubectl_kustomize_renders() {
    let dir = repo().join("manifests");
    let out = match Command::new("kubectl").arg("kustomize").arg(&dir).output() {
        Ok(out) => out,
        Err(e) => {
            println!("SKIP: kubectl is not installed ({e}); cannot compare with kubectl kustomize");
            return;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: Vec<Value> =
        serde_yaml::Deserializer::from_str(std::str::from_utf8(&out.stdout).expect("UTF-8"))
            .map(|d| Value::deserialize(d).expect("YAML"))
            .filter(|v| !v.is_null())
            .collect();
    let read = install();
    assert_eq!(rendered.len(), read.len(), "document count");
    assert_eq!(identities(&rendered), identities(&read));
    // `images:` is the only field applied by kustomize and not by the reader.
    for d in &rendered {
        for c in d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(
                c["image"], "ghcr.io/nightcap-dev/nightcap:0.1.0",
                "{}",
                d["metadata"]["name"]
            );
        }
    }
}
