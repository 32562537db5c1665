//! The resource types the server serves: built-in kinds plus every registered CRD version.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::status::{ApiError, ApiResult};

/// Built-in kinds with behaviour beyond generic storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Builtin {
    Namespace,
    Pod,
    Node,
    CoreEvent,
    Event,
    Job,
    Lease,
    Secret,
    ConfigMap,
    ServiceAccount,
    Crd,
    TokenReview,
    SubjectAccessReview,
    SelfSubjectAccessReview,
    LocalSubjectAccessReview,
}

impl Builtin {
    /// Review kinds are create-only and never stored.
    pub fn is_review(self) -> bool {
        matches!(
            self,
            Self::TokenReview
                | Self::SubjectAccessReview
                | Self::SelfSubjectAccessReview
                | Self::LocalSubjectAccessReview
        )
    }
}

/// One served (group, version, resource).
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, `""` for core.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Plural resource name, e.g. `pods`.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`po`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Has a `/status` subresource.
    pub status_subresource: bool,
    /// Verbs advertised in discovery.
    pub verbs: Vec<&'static str>,
    /// The CRD's `openAPIV3Schema` for this version.
    pub schema: Option<Value>,
    /// The CRD's `additionalPrinterColumns`.
    pub printer_columns: Vec<Value>,
    /// Special behaviour, if built in.
    pub builtin: Option<Builtin>,
    /// Whether this version is the storage version (CRDs) — objects are stored once per resource.
    pub storage_version: bool,
}

const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceType {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// Storage key: group and plural (all versions of a resource share storage).
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }
    /// `pods` or `jobs.batch`, as used in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// Kind of the list object.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    /// Whether generation is tracked (objects with a spec).
    pub fn tracks_generation(&self) -> bool {
        !matches!(
            self.builtin,
            Some(
                Builtin::Secret
                    | Builtin::ConfigMap
                    | Builtin::ServiceAccount
                    | Builtin::CoreEvent
                    | Builtin::Event
                    | Builtin::Pod
            )
        )
    }

    fn builtin(
        group: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        status: bool,
        short: &[&str],
        b: Builtin,
    ) -> Self {
        // Every built-in we serve is at v1 in Kubernetes 1.33.
        let version = "v1";
        Self {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: if matches!(b, Builtin::Pod | Builtin::Job) {
                vec!["all".into()]
            } else {
                vec![]
            },
            status_subresource: status,
            verbs: if b.is_review() {
                vec!["create"]
            } else {
                CRUD.to_vec()
            },
            schema: None,
            printer_columns: vec![],
            builtin: Some(b),
            storage_version: true,
        }
    }
}

/// All served resource types.
#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Default for Registry {
    fn default() -> Self {
        use Builtin as B;
        let t = ResourceType::builtin;
        let types = vec![
            t(
                "",
                "Namespace",
                "namespaces",
                false,
                true,
                &["ns"],
                B::Namespace,
            ),
            t("", "Pod", "pods", true, true, &["po"], B::Pod),
            t("", "Node", "nodes", false, true, &["no"], B::Node),
            t("", "Event", "events", true, false, &["ev"], B::CoreEvent),
            t("", "Secret", "secrets", true, false, &[], B::Secret),
            t(
                "",
                "ConfigMap",
                "configmaps",
                true,
                false,
                &["cm"],
                B::ConfigMap,
            ),
            t(
                "",
                "ServiceAccount",
                "serviceaccounts",
                true,
                false,
                &["sa"],
                B::ServiceAccount,
            ),
            t(
                "events.k8s.io",
                "Event",
                "events",
                true,
                false,
                &["ev"],
                B::Event,
            ),
            t("batch", "Job", "jobs", true, true, &[], B::Job),
            t(
                "coordination.k8s.io",
                "Lease",
                "leases",
                true,
                false,
                &[],
                B::Lease,
            ),
            t(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                true,
                &["crd", "crds"],
                B::Crd,
            ),
            t(
                "authentication.k8s.io",
                "TokenReview",
                "tokenreviews",
                false,
                false,
                &[],
                B::TokenReview,
            ),
            t(
                "authorization.k8s.io",
                "SubjectAccessReview",
                "subjectaccessreviews",
                false,
                false,
                &[],
                B::SubjectAccessReview,
            ),
            t(
                "authorization.k8s.io",
                "SelfSubjectAccessReview",
                "selfsubjectaccessreviews",
                false,
                false,
                &[],
                B::SelfSubjectAccessReview,
            ),
            t(
                "authorization.k8s.io",
                "LocalSubjectAccessReview",
                "localsubjectaccessreviews",
                true,
                false,
                &[],
                B::LocalSubjectAccessReview,
            ),
        ];
        Self {
            types: types.into_iter().map(Arc::new).collect(),
        }
    }
}

impl Registry {
    /// Every served type.
    pub fn all(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    /// Look up by group, version and plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// The type objects of `key` are stored as (storage version).
    pub fn storage_type(&self, key: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.key() == key && t.storage_version)
            .cloned()
    }

    /// Look up by apiVersion and kind.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
    }

    /// Groups in discovery order, each with its versions (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            if t.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, vs)) => {
                    if !vs.contains(&t.version) {
                        vs.push(t.version.clone());
                    }
                }
                None => out.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        out
    }

    /// Register (or replace) the versions served by a CustomResourceDefinition object.
    pub fn register_crd(&mut self, crd: &Value) -> ApiResult<Vec<Arc<ResourceType>>> {
        let spec = &crd["spec"];
        let s = |v: &Value| v.as_str().map(str::to_string);
        let bad = |what: &str| {
            ApiError::bad_request(format!("CustomResourceDefinition is missing {what}"))
        };
        let group = s(&spec["group"]).ok_or_else(|| bad("spec.group"))?;
        let names = &spec["names"];
        let plural = s(&names["plural"]).ok_or_else(|| bad("spec.names.plural"))?;
        let kind = s(&names["kind"]).ok_or_else(|| bad("spec.names.kind"))?;
        let singular = s(&names["singular"]).unwrap_or_else(|| kind.to_lowercase());
        let strs = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        let versions = spec["versions"]
            .as_array()
            .ok_or_else(|| bad("spec.versions"))?;
        let mut added = Vec::new();
        self.types
            .retain(|t| !(t.group == group && t.plural == plural));
        for v in versions {
            if v["served"].as_bool() == Some(false) {
                continue;
            }
            let version = s(&v["name"]).ok_or_else(|| bad("spec.versions[].name"))?;
            let rt = Arc::new(ResourceType {
                group: group.clone(),
                version,
                kind: kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                namespaced,
                short_names: strs(&names["shortNames"]),
                categories: strs(&names["categories"]),
                status_subresource: v["subresources"]["status"].is_object(),
                verbs: CRUD.to_vec(),
                schema: v["schema"].get("openAPIV3Schema").cloned(),
                printer_columns: v["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                builtin: None,
                storage_version: v["storage"].as_bool().unwrap_or(versions.len() == 1),
            });
            self.types.push(rt.clone());
            added.push(rt);
        }
        Ok(added)
    }

    /// Stop serving a CRD's resource.
    pub fn unregister_crd(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|t| !(t.group == group && t.plural == plural && t.builtin.is_none()));
    }
}

/// The discovery `APIResource` entries for one group/version.
pub(crate) fn api_resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types: Vec<&Arc<ResourceType>> = reg
        .all()
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for t in &types {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": t.verbs,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}
