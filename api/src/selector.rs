//! Label-selector matching: the one implementation every component uses (Kubernetes
//! semantics, by `kube::core::Selector`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

/// A label selector compiled once, matched against many label sets.
///
/// `matchLabels` AND every `matchExpressions` requirement; an empty selector matches
/// everything. A selector Kubernetes would refuse (unknown operator, `In`/`NotIn` without
/// values) matches nothing: validation reports it, matching never widens it.
#[derive(Debug, Clone)]
pub struct LabelMatcher(Option<Selector>);

impl LabelMatcher {
    /// Compiles `selector`.
    pub fn new(selector: &LabelSelector) -> Self {
        Self(Selector::try_from(selector.clone()).ok())
    }

    /// Whether `labels` are selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// Whether `selector` selects `labels` (compile with [`LabelMatcher`] to match many).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    LabelMatcher::new(selector).matches(labels)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn req(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
            }]),
            ..LabelSelector::default()
        }
    }

    #[test]
    fn kubernetes_semantics() {
        let web = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "front".to_string()),
        ]);
        let by = |k: &str, v: &str| LabelSelector {
            match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
            ..LabelSelector::default()
        };
        let cases: &[(&str, LabelSelector, bool)] = &[
            ("empty selects all", LabelSelector::default(), true),
            ("matchLabels equal", by("app", "web"), true),
            ("matchLabels other value", by("app", "db"), false),
            ("matchLabels missing key", by("zone", "a"), false),
            ("In", req("app", "In", Some(&["web", "api"])), true),
            ("In other", req("app", "In", Some(&["db"])), false),
            ("In missing key", req("zone", "In", Some(&["a"])), false),
            ("NotIn", req("app", "NotIn", Some(&["web"])), false),
            (
                "NotIn missing key",
                req("zone", "NotIn", Some(&["a"])),
                true,
            ),
            ("Exists", req("app", "Exists", None), true),
            ("Exists missing", req("zone", "Exists", None), false),
            ("DoesNotExist", req("app", "DoesNotExist", None), false),
            (
                "DoesNotExist missing",
                req("zone", "DoesNotExist", None),
                true,
            ),
            (
                "unknown operator",
                req("app", "Bogus", Some(&["web"])),
                false,
            ),
            ("In without values", req("app", "In", None), false),
        ];
        for (what, sel, want) in cases {
            assert_eq!(selects(sel, &web), *want, "{what}");
        }
        let both = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: req("tier", "In", Some(&["back"])).match_expressions,
        };
        assert!(!selects(&both, &web), "labels AND expressions");
    }
}
