//! RBAC manifests as test-policy rules: Roles and ClusterRoles (with ClusterRole aggregation)
//! bound by RoleBindings and ClusterRoleBindings.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use super::Rule;

/// Label by which a ClusterRole joins the built-in `admin`.
pub const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
/// Label by which a ClusterRole joins the built-in `edit`.
pub const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
/// Label by which a ClusterRole joins the built-in `view`.
pub const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// Who a binding grants to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Subject {
    /// A user name.
    User(String),
    /// A group name.
    Group(String),
    /// A service account (namespace, name).
    ServiceAccount(String, String),
}

/// The built-in user-facing ClusterRoles `admin`, `edit` and `view`, reduced to their
/// aggregation: each holds only the rules of the ClusterRoles labelled
/// `rbac.authorization.k8s.io/aggregate-to-{admin,edit,view}: "true"` (and, as in a real
/// cluster, `edit` joins `admin` and `view` joins `edit`). The rules Kubernetes itself puts in
/// them (pods, deployments, …) are not modelled, so a test sees exactly what the manifests add.
fn builtin_cluster_roles() -> [Value; 3] {
    let role = |name: &str, selects: &str, joins: Option<&str>| {
        let labels: BTreeMap<&str, &str> = joins.into_iter().map(|l| (l, "true")).collect();
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {selects: "true"}}]},
        })
    };
    [
        role("admin", AGGREGATE_TO_ADMIN, None),
        role("edit", AGGREGATE_TO_EDIT, Some(AGGREGATE_TO_ADMIN)),
        role("view", AGGREGATE_TO_VIEW, Some(AGGREGATE_TO_EDIT)),
    ]
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn labels(role: &Value) -> BTreeMap<String, String> {
    role["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The ClusterRoles and Roles of `docs`, plus the built-ins the documents do not define.
struct Roles<'a> {
    cluster: Vec<Cow<'a, Value>>,
    namespaced: Vec<&'a Value>,
}

impl<'a> Roles<'a> {
    fn new(docs: &'a [Value]) -> Self {
        let mut cluster: Vec<Cow<'a, Value>> = docs
            .iter()
            .filter(|d| d["kind"] == "ClusterRole")
            .map(Cow::Borrowed)
            .collect();
        for builtin in builtin_cluster_roles() {
            if !cluster
                .iter()
                .any(|c| c["metadata"]["name"] == builtin["metadata"]["name"])
            {
                cluster.push(Cow::Owned(builtin));
            }
        }
        let namespaced = docs.iter().filter(|d| d["kind"] == "Role").collect();
        Self {
            cluster,
            namespaced,
        }
    }

    /// The rules of ClusterRole `name`: its `rules`, or, with an `aggregationRule`, the rules of
    /// every other ClusterRole one of its `clusterRoleSelectors` selects (recursively, as the
    /// aggregation controller's result feeds further aggregation; a selector that does not parse
    /// selects nothing). `None` when undefined.
    fn cluster_rules(&self, name: &str, visiting: &mut BTreeSet<String>) -> Option<Vec<Value>> {
        let role = self
            .cluster
            .iter()
            .find(|c| c["metadata"]["name"] == name)?;
        let Some(agg) = role.get("aggregationRule") else {
            return Some(role["rules"].as_array().cloned().unwrap_or_default());
        };
        visiting.insert(name.to_string());
        let selectors: Vec<LabelSelector> = agg["clusterRoleSelectors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|sel| serde_json::from_value(sel.clone()).ok())
            .collect();
        let mut rules = Vec::new();
        for other in &self.cluster {
            let other_name = s(&other["metadata"]["name"]);
            if visiting.contains(&other_name) {
                continue;
            }
            let other_labels = labels(other);
            if selectors
                .iter()
                .any(|sel| nightcap_api::selector::selects(sel, &other_labels))
            {
                rules.extend(
                    self.cluster_rules(&other_name, visiting)
                        .unwrap_or_default(),
                );
            }
        }
        visiting.remove(name);
        Some(rules)
    }

    fn rules(&self, kind: &str, name: &str, namespace: &str) -> Option<Vec<Value>> {
        match kind {
            "ClusterRole" => self.cluster_rules(name, &mut BTreeSet::new()),
            "Role" => self
                .namespaced
                .iter()
                .find(|r| r["metadata"]["name"] == name && r["metadata"]["namespace"] == namespace)
                .map(|r| r["rules"].as_array().cloned().unwrap_or_default()),
            _ => None,
        }
    }
}

/// What every RoleBinding and ClusterRoleBinding of `docs` grants, per subject. A RoleBinding's
/// rules apply in its namespace only. Other documents are ignored; a binding to a role that is
/// neither in `docs` nor built in is an error.
pub(super) fn grants(docs: &[Value]) -> Result<Vec<(Subject, Vec<Rule>)>, String> {
    let roles = Roles::new(docs);
    let mut out = Vec::new();
    for b in docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
    {
        let ns = s(&b["metadata"]["namespace"]);
        let (rk, rn) = (s(&b["roleRef"]["kind"]), s(&b["roleRef"]["name"]));
        let raw = roles.rules(&rk, &rn, &ns).ok_or_else(|| {
            format!(
                "{} {:?} refers to {rk} {rn:?}, which is not defined",
                s(&b["kind"]),
                s(&b["metadata"]["name"])
            )
        })?;
        let rules: Vec<Rule> = raw
            .iter()
            .map(|r| Rule {
                verbs: list(&r["verbs"]),
                api_groups: list(&r["apiGroups"]),
                resources: list(&r["resources"]),
                resource_names: list(&r["resourceNames"]),
                namespaces: (b["kind"] == "RoleBinding").then(|| vec![ns.clone()]),
                non_resource_urls: list(&r["nonResourceURLs"]),
            })
            .collect();
        for subj in b["subjects"].as_array().into_iter().flatten() {
            let name = s(&subj["name"]);
            let subject = match subj["kind"].as_str() {
                Some("Group") => Subject::Group(name),
                Some("ServiceAccount") => Subject::ServiceAccount(
                    subj["namespace"]
                        .as_str()
                        .map_or(ns.clone(), str::to_string),
                    name,
                ),
                _ => Subject::User(name),
            };
            out.push((subject, rules.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<Value> {
        use serde::Deserialize;
        serde_yaml::Deserializer::from_str(yaml)
            .map(|d| Value::deserialize(d).expect("YAML"))
            .collect()
    }

    fn resources(rules: &[Rule]) -> Vec<String> {
        let mut r: Vec<String> = rules.iter().flat_map(|r| r.resources.clone()).collect();
        r.sort();
        r
    }

    #[test]
    fn aggregation_follows_labels_and_expressions() {
        let d = docs(
            r#"
kind: ClusterRole
metadata: {name: a, labels: {agg: "yes", tier: gold}}
rules: [{apiGroups: [""], resources: [a], verbs: [get]}]
---
kind: ClusterRole
metadata: {name: b, labels: {agg: "yes", tier: silver}}
rules: [{apiGroups: [""], resources: [b], verbs: [get]}]
---
kind: ClusterRole
metadata: {name: c, labels: {other: "x"}}
rules: [{apiGroups: [""], resources: [c], verbs: [get]}]
---
kind: ClusterRole
metadata: {name: by-labels}
aggregationRule: {clusterRoleSelectors: [{matchLabels: {agg: "yes"}}]}
rules: [{apiGroups: [""], resources: [ignored-own-rule], verbs: [get]}]
---
kind: ClusterRole
metadata: {name: by-expression, labels: {agg: "yes"}}
aggregationRule:
  clusterRoleSelectors:
  - matchExpressions: [{key: tier, operator: In, values: [gold]}]
  - matchExpressions: [{key: other, operator: Exists}]
---
kind: ClusterRoleBinding
metadata: {name: one}
roleRef: {kind: ClusterRole, name: by-labels}
subjects: [{kind: User, name: u1}]
---
kind: RoleBinding
metadata: {name: two, namespace: ns}
roleRef: {kind: ClusterRole, name: by-expression}
subjects: [{kind: User, name: u2}]
"#,
        );
        let g = grants(&d).expect("grants");
        assert_eq!(g[0].0, Subject::User("u1".into()));
        // a, b and by-expression (itself aggregated: a, c), never the role's own `rules`.
        assert_eq!(resources(&g[0].1), ["a", "a", "b", "c"]);
        assert!(g[0].1.iter().all(|r| r.namespaces.is_none()));
        assert_eq!(resources(&g[1].1), ["a", "c"]);
        assert!(
            g[1].1
                .iter()
                .all(|r| r.namespaces == Some(vec!["ns".to_string()]))
        );
    }

    #[test]
    fn builtin_roles_hold_only_what_is_aggregated_into_them() {
        let d = docs(
            r#"
kind: ClusterRole
metadata: {name: x-editor, labels: {rbac.authorization.k8s.io/aggregate-to-edit: "true"}}
rules: [{apiGroups: [x], resources: [things], verbs: [create]}]
---
kind: ClusterRole
metadata: {name: x-viewer, labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}}
rules: [{apiGroups: [x], resources: [things], verbs: [get]}]
---
kind: ClusterRole
metadata: {name: x-admin, labels: {rbac.authorization.k8s.io/aggregate-to-admin: "true"}}
rules: [{apiGroups: [x], resources: [secrets-of-x], verbs: [get]}]
"#,
        );
        let roles = Roles::new(&d);
        let verbs = |name: &str| -> Vec<String> {
            let mut v: Vec<String> = roles
                .cluster_rules(name, &mut BTreeSet::new())
                .expect("defined")
                .iter()
                .flat_map(|r| list(&r["verbs"]))
                .collect();
            v.sort();
            v
        };
        assert_eq!(verbs("view"), ["get"]);
        assert_eq!(verbs("edit"), ["create", "get"]);
        assert_eq!(verbs("admin"), ["create", "get", "get"]);
        assert!(
            roles
                .cluster_rules("cluster-admin", &mut BTreeSet::new())
                .is_none()
        );
        // A cycle of aggregations terminates.
        let cyclic = docs(
            r#"
kind: ClusterRole
metadata: {name: p, labels: {l: p}}
aggregationRule: {clusterRoleSelectors: [{matchLabels: {l: q}}]}
---
kind: ClusterRole
metadata: {name: q, labels: {l: q}}
aggregationRule: {clusterRoleSelectors: [{matchLabels: {l: p}}]}
"#,
        );
        assert_eq!(
            Roles::new(&cyclic).cluster_rules("p", &mut BTreeSet::new()),
            Some(vec![])
        );
    }
}
