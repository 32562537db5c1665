//! Test authentication and authorisation: bearer tokens mapped to users, groups and service
//! accounts, and RBAC-like rules, given directly or read from RBAC manifests (`rbac`). The same
//! policy answers TokenReview and SubjectAccessReview.

mod rbac;

use std::collections::BTreeMap;

pub use rbac::{AGGREGATE_TO_ADMIN, AGGREGATE_TO_EDIT, AGGREGATE_TO_VIEW};

/// One RBAC-like rule: the request is allowed when every listed dimension matches.
///
/// Empty lists never match (like RBAC); use `"*"` for "any". `namespaces: None` means the rule
/// applies cluster-wide (like a ClusterRoleBinding), `Some(list)` only in those namespaces (like
/// RoleBindings) and never to cluster-scoped resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or `*`.
    pub verbs: Vec<String>,
    /// API groups (`""` for core, `nightcap.dev`, `*`).
    pub api_groups: Vec<String>,
    /// Resources, including subresources as `plural/sub` (`packetcaptures/files`), `*`, `*/status`.
    pub resources: Vec<String>,
    /// Restrict to these object names (empty = any name).
    pub resource_names: Vec<String>,
    /// Restrict to these namespaces; `None` = cluster-wide.
    pub namespaces: Option<Vec<String>>,
    /// Non-resource URLs (`/healthz`, `/metrics`, `*`), matched instead of resources when set.
    pub non_resource_urls: Vec<String>,
}

fn strings<I: IntoIterator<Item = S>, S: Into<String>>(i: I) -> Vec<String> {
    i.into_iter().map(Into::into).collect()
}

impl Rule {
    /// A rule with the given verbs, groups and resources, cluster-wide.
    pub fn new<V, G, R, S1, S2, S3>(verbs: V, groups: G, resources: R) -> Self
    where
        V: IntoIterator<Item = S1>,
        G: IntoIterator<Item = S2>,
        R: IntoIterator<Item = S3>,
        S1: Into<String>,
        S2: Into<String>,
        S3: Into<String>,
    {
        Self {
            verbs: strings(verbs),
            api_groups: strings(groups),
            resources: strings(resources),
            ..Self::default()
        }
    }
    /// Everything, everywhere.
    pub fn all() -> Self {
        Self {
            non_resource_urls: vec!["*".into()],
            ..Self::new(["*"], ["*"], ["*"])
        }
    }
    /// Restrict to namespaces.
    pub fn in_namespaces<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ns: I) -> Self {
        self.namespaces = Some(strings(ns));
        self
    }
    /// Restrict to object names.
    pub fn names<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.resource_names = strings(names);
        self
    }

    fn matches(&self, a: &Attributes) -> bool {
        let has = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if let Some(path) = &a.non_resource_path {
            return self.non_resource_urls.iter().any(|u| {
                u == path || u == "*" || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            });
        }
        if !has(&self.api_groups, &a.group) {
            return false;
        }
        let res_ok = self.resources.iter().any(|r| {
            r == "*"
                || (a.subresource.is_empty() && *r == a.resource)
                || (!a.subresource.is_empty()
                    && (*r == format!("{}/{}", a.resource, a.subresource)
                        || *r == format!("*/{}", a.subresource)))
        });
        if !res_ok {
            return false;
        }
        if !self.resource_names.is_empty() && !self.resource_names.contains(&a.name) {
            return false;
        }
        match &self.namespaces {
            None => true,
            Some(list) => {
                !a.namespace.is_empty() && list.iter().any(|n| n == "*" || *n == a.namespace)
            }
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (`alice`, `system:serviceaccount:ns:name`).
    pub name: String,
    /// Stable uid.
    pub uid: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
}

/// What a request wants to do (the SubjectAccessReview attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Verb.
    pub verb: String,
    /// API group.
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource or empty.
    pub subresource: String,
    /// Namespace or empty.
    pub namespace: String,
    /// Object name or empty.
    pub name: String,
    /// For non-resource requests, the path.
    pub non_resource_path: Option<String>,
}

/// A user (or service account) in the test policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub name: String,
    /// Bearer token.
    pub token: String,
    /// Extra groups.
    pub groups: Vec<String>,
    /// Rules granted directly to this user.
    pub rules: Vec<Rule>,
}

impl User {
    /// A user whose token is `"{name}-token"` unless changed with [`User::token`].
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            token: format!("{}-token", name.replace(':', "-")),
            name,
            groups: vec![],
            rules: vec![],
        }
    }
    /// A service account `system:serviceaccount:{ns}:{name}` with its SA groups.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        let mut u = Self::new(format!("system:serviceaccount:{namespace}:{name}"));
        u.token = format!("sa-{namespace}-{name}-token");
        u.groups = vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
        ];
        u
    }
    /// Set the bearer token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }
    /// Add a group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }
    /// Grant a rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }
}

/// Name of the built-in administrator (group `system:masters`, allowed everything).
pub const ADMIN: &str = "admin";

/// The test policy: users with tokens and rules, plus rules granted to groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    users: Vec<User>,
    group_rules: BTreeMap<String, Vec<Rule>>,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy {
    /// A policy with only the administrator (`admin`, token `admin-token`, group `system:masters`).
    pub fn new() -> Self {
        let admin = User::new(ADMIN).group("system:masters");
        let mut group_rules = BTreeMap::new();
        group_rules.insert("system:masters".to_string(), vec![Rule::all()]);
        // Like the real system:discovery / system:basic-user / system:public-info-viewer roles.
        group_rules.insert(
            "system:authenticated".to_string(),
            vec![
                Rule {
                    verbs: vec!["get".into()],
                    non_resource_urls: strings([
                        "/api",
                        "/api/*",
                        "/apis",
                        "/apis/*",
                        "/version",
                        "/healthz",
                        "/livez",
                        "/readyz",
                        "/openapi/*",
                    ]),
                    ..Rule::default()
                },
                Rule::new(
                    ["create"],
                    ["authorization.k8s.io"],
                    ["selfsubjectaccessreviews"],
                ),
            ],
        );
        group_rules.insert(
            "system:unauthenticated".to_string(),
            vec![Rule {
                verbs: vec!["get".into()],
                non_resource_urls: strings(["/version", "/healthz", "/livez", "/readyz"]),
                ..Rule::default()
            }],
        );
        Self {
            users: vec![admin],
            group_rules,
        }
    }
    /// Add (or replace, by name) a user.
    pub fn user(mut self, user: User) -> Self {
        self.users.retain(|u| u.name != user.name);
        self.users.push(user);
        self
    }
    /// Add a service account with rules.
    pub fn service_account(self, namespace: &str, name: &str, rules: Vec<Rule>) -> Self {
        let mut sa = User::service_account(namespace, name);
        sa.rules = rules;
        self.user(sa)
    }
    /// Grant a rule to every member of `group`.
    pub fn group_rule(mut self, group: impl Into<String>, rule: Rule) -> Self {
        self.group_rules.entry(group.into()).or_default().push(rule);
        self
    }
    /// Add the rules that RBAC manifests (Role, ClusterRole, RoleBinding, ClusterRoleBinding;
    /// multi-document YAML) grant to their subjects; see [`Policy::with_rbac_documents`].
    pub fn with_rbac_yaml(self, yaml: &str) -> Result<Self, String> {
        use serde::Deserialize;
        let mut docs = Vec::new();
        for d in serde_yaml::Deserializer::from_str(yaml) {
            let v = serde_json::Value::deserialize(d).map_err(|e| format!("RBAC YAML: {e}"))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
        self.with_rbac_documents(&docs)
    }

    /// Add the rules that the RBAC objects among `docs` grant to their subjects: ServiceAccounts
    /// and Users are added to the policy when missing (default tokens), Groups get group rules.
    /// A RoleBinding's rules apply in its namespace only. ClusterRoles with an
    /// `aggregationRule` hold the rules of the ClusterRoles their `clusterRoleSelectors`
    /// (`matchLabels`, `matchExpressions`) select among `docs`; the built-in `admin`, `edit` and
    /// `view` exist as aggregations over the `rbac.authorization.k8s.io/aggregate-to-*` labels
    /// only, without the rules Kubernetes itself gives them, unless `docs` define them. Other
    /// documents are ignored; a binding to an undefined role is an error.
    pub fn with_rbac_documents(mut self, docs: &[serde_json::Value]) -> Result<Self, String> {
        for (subject, rules) in rbac::grants(docs)? {
            let user = match subject {
                rbac::Subject::Group(name) => {
                    self.group_rules.entry(name).or_default().extend(rules);
                    continue;
                }
                rbac::Subject::ServiceAccount(ns, name) => User::service_account(&ns, &name),
                rbac::Subject::User(name) => User::new(name),
            };
            if !self.users.iter().any(|u| u.name == user.name) {
                self.users.push(user.clone());
            }
            if let Some(u) = self.users.iter_mut().find(|u| u.name == user.name) {
                u.rules.extend(rules);
            }
        }
        Ok(self)
    }

    /// All users.
    pub fn users(&self) -> &[User] {
        &self.users
    }
    /// Token of a user, if known.
    pub fn token_of(&self, name: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.token.as_str())
    }

    /// The user a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let u = self.users.iter().find(|u| u.token == token)?;
        Some(self.info(u))
    }

    fn info(&self, u: &User) -> UserInfo {
        let mut groups = u.groups.clone();
        groups.push("system:authenticated".into());
        UserInfo {
            name: u.name.clone(),
            uid: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, u.name.as_bytes()).to_string(),
            groups,
        }
    }

    /// The anonymous user (no token).
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// Decide a request by `user` with `groups`; `Ok(reason)` when allowed, `Err(reason)` when not.
    pub fn authorize(
        &self,
        user: &str,
        groups: &[String],
        a: &Attributes,
    ) -> Result<String, String> {
        if let Some(u) = self.users.iter().find(|u| u.name == user)
            && let Some(i) = u.rules.iter().position(|r| r.matches(a))
        {
            return Ok(format!("allowed by test policy rule {i} of user {user:?}"));
        }
        // Only the groups given count (a SubjectAccessReview without groups is about the user alone).
        for g in groups {
            if let Some(i) = self
                .group_rules
                .get(g)
                .and_then(|rs| rs.iter().position(|r| r.matches(a)))
            {
                return Ok(format!("allowed by test policy rule {i} of group {g:?}"));
            }
        }
        Err(format!("no test policy rule allows user {user:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, group: &str, res: &str, sub: &str, ns: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            ..Attributes::default()
        }
    }

    #[test]
    fn rbac_manifests_become_rules() {
        let yaml = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules:
- {apiGroups: ["nightcap.dev"], resources: ["packetcaptures", "packetcaptures/status"], verbs: ["get", "list", "watch"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: read-team-a, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
subjects:
- {kind: ServiceAccount, name: gw, namespace: sys}
- {kind: Group, name: devs}
"#;
        let p = Policy::new().with_rbac_yaml(yaml).unwrap();
        let sa = p
            .authenticate(p.token_of("system:serviceaccount:sys:gw").unwrap())
            .unwrap();
        let a = attrs("list", "nightcap.dev", "packetcaptures", "", "team-a");
        assert!(p.authorize(&sa.name, &sa.groups, &a).is_ok());
        assert!(
            p.authorize(
                &sa.name,
                &sa.groups,
                &attrs("list", "nightcap.dev", "packetcaptures", "", "team-b")
            )
            .is_err()
        );
        assert!(p.authorize("someone", &["devs".to_string()], &a).is_ok());
        assert!(p.authorize("someone", &[], &a).is_err());
        assert!(
            Policy::new()
                .with_rbac_yaml("kind: RoleBinding\nroleRef: {kind: Role, name: x}\n")
                .is_err()
        );
    }

    #[test]
    fn rules_table() {
        let p = Policy::new().user(
            User::new("alice")
                .rule(
                    Rule::new(["get", "list"], ["nightcap.dev"], ["packetcaptures"])
                        .in_namespaces(["team-a"]),
                )
                .rule(
                    Rule::new(["get"], ["nightcap.dev"], ["packetcaptures/files"])
                        .in_namespaces(["team-a"]),
                ),
        );
        let g = vec!["system:authenticated".to_string()];
        let cases = [
            (
                attrs("get", "nightcap.dev", "packetcaptures", "", "team-a"),
                true,
            ),
            (
                attrs("list", "nightcap.dev", "packetcaptures", "", "team-a"),
                true,
            ),
            (
                attrs("create", "nightcap.dev", "packetcaptures", "", "team-a"),
                false,
            ),
            (
                attrs("get", "nightcap.dev", "packetcaptures", "", "team-b"),
                false,
            ),
            (
                attrs("get", "nightcap.dev", "packetcaptures", "files", "team-a"),
                true,
            ),
            (
                attrs("get", "nightcap.dev", "packetcaptures", "status", "team-a"),
                false,
            ),
            (
                attrs("list", "nightcap.dev", "packetcaptures", "", ""),
                false,
            ),
            (
                attrs(
                    "create",
                    "authorization.k8s.io",
                    "selfsubjectaccessreviews",
                    "",
                    "",
                ),
                true,
            ),
        ];
        for (a, want) in cases {
            assert_eq!(p.authorize("alice", &g, &a).is_ok(), want, "{a:?}");
        }
        let admin = p.authenticate("admin-token").unwrap();
        assert!(
            p.authorize(
                &admin.name,
                &admin.groups,
                &attrs("delete", "", "nodes", "", "")
            )
            .is_ok()
        );
        assert!(p.authenticate("nope").is_none());
    }
}
