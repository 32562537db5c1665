//! Kubernetes name, label and selector syntax (the rules of apimachinery's `validation` package).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::ValidationErrors;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const LABEL_VALUE_MAX: usize = 63;

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 63): namespaces, node-safe names.
pub fn validate_dns1123_label(value: &str, path: &str, errs: &mut ValidationErrors) {
    if let Err(msg) = dns1123_label(value) {
        errs.push(path, msg);
    }
}

fn dns1123_label(value: &str) -> Result<(), String> {
    let b = value.as_bytes();
    if b.is_empty() {
        return Err("must not be empty".into());
    }
    if b.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters (is {})",
            b.len()
        ));
    }
    let ok = is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-');
    if !ok {
        return Err(format!(
            "{value:?} is not a DNS-1123 label: lower-case letters, digits and '-', starting and \
             ending with a letter or digit (e.g. 'my-name')"
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain (dot-separated labels, ≤ 253): object names.
pub fn validate_dns1123_subdomain(value: &str, path: &str, errs: &mut ValidationErrors) {
    if value.is_empty() {
        errs.push(path, "must not be empty");
        return;
    }
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(
            path,
            format!(
                "must be no more than {DNS1123_SUBDOMAIN_MAX} characters (is {})",
                value.len()
            ),
        );
        return;
    }
    if value.split('.').any(|part| dns1123_label(part).is_err()) {
        errs.push(
            path,
            format!(
                "{value:?} is not a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', \
                 starting and ending with a letter or digit (e.g. 'example.com')"
            ),
        );
    }
}

/// A label key: optional DNS-1123 subdomain prefix and `/`, then a name of ≤ 63 characters of
/// alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn validate_label_key(key: &str, path: &str, errs: &mut ValidationErrors) {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let mut sub = ValidationErrors::default();
        validate_dns1123_subdomain(prefix, path, &mut sub);
        if !sub.is_empty() {
            errs.push(
                path,
                format!("label key {key:?} has an invalid prefix: it must be a DNS-1123 subdomain"),
            );
        }
    }
    if let Err(msg) = qualified_name_part(name) {
        errs.push(path, format!("label key {key:?}: {msg}"));
    }
}

fn qualified_name_part(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Err("name part must not be empty".into());
    }
    if b.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    let ok = b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(
            "name part must consist of alphanumerics, '-', '_' or '.', starting and ending \
             with an alphanumeric"
                .into(),
        )
    }
}

/// A label value: empty, or ≤ 63 characters of alphanumerics, `-`, `_`, `.`, starting and
/// ending alphanumeric.
pub fn validate_label_value(value: &str, path: &str, errs: &mut ValidationErrors) {
    if value.is_empty() {
        return;
    }
    let b = value.as_bytes();
    if b.len() > LABEL_VALUE_MAX {
        errs.push(
            path,
            format!("label value must be no more than {LABEL_VALUE_MAX} characters"),
        );
        return;
    }
    let ok = b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        errs.push(
            path,
            format!(
                "label value {value:?} must consist of alphanumerics, '-', '_' or '.', starting \
                 and ending with an alphanumeric"
            ),
        );
    }
}

/// A map of labels (keys and values).
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &str, errs: &mut ValidationErrors) {
    for (k, v) in labels {
        let p = format!("{path}[{k}]");
        validate_label_key(k, &p, errs);
        validate_label_value(v, &p, errs);
    }
}

/// A label selector: keys and values of `matchLabels`; operators and value counts of
/// `matchExpressions` (`In`/`NotIn` need values, `Exists`/`DoesNotExist` must have none).
pub fn validate_label_selector(sel: &LabelSelector, path: &str, errs: &mut ValidationErrors) {
    if let Some(labels) = &sel.match_labels {
        validate_labels(labels, &format!("{path}.matchLabels"), errs);
    }
    for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        validate_label_key(&expr.key, &format!("{p}.key"), errs);
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(
                        format!("{p}.values"),
                        format!("must be non-empty when operator is {}", expr.operator),
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(
                        format!("{p}.values"),
                        format!("must be empty when operator is {}", expr.operator),
                    );
                }
            }
            other => errs.push(
                format!("{p}.operator"),
                format!(
                    "{other:?} is not a valid operator (use In, NotIn, Exists or DoesNotExist)"
                ),
            ),
        }
        for (j, v) in values.iter().enumerate() {
            validate_label_value(v, &format!("{p}.values[{j}]"), errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn check(f: impl Fn(&str, &str, &mut ValidationErrors), cases: &[(&str, bool)]) {
        for (value, valid) in cases {
            let mut errs = ValidationErrors::default();
            f(value, "f", &mut errs);
            assert_eq!(errs.is_empty(), *valid, "{value:?}: {errs}");
        }
    }

    #[test]
    fn dns1123_labels() {
        let long = "a".repeat(64);
        check(
            validate_dns1123_label,
            &[
                ("a", true),
                ("my-pod-1", true),
                ("0abc", true),
                (&"a".repeat(63), true),
                ("", false),
                ("-a", false),
                ("a-", false),
                ("A", false),
                ("a.b", false),
                ("a_b", false),
                ("../x", false),
                ("ä", false),
                (&long, false),
            ],
        );
    }

    #[test]
    fn dns1123_subdomains() {
        check(
            validate_dns1123_subdomain,
            &[
                ("a.b.c", true),
                ("capture-1", true),
                ("a..b", false),
                (".a", false),
                ("a/b", false),
                ("a%2Fb", false),
                ("A.b", false),
                (&"a".repeat(254), false),
            ],
        );
    }

    #[test]
    fn label_keys_and_values() {
        check(
            validate_label_key,
            &[
                ("app", true),
                ("app.kubernetes.io/name", true),
                ("A_b.c-d", true),
                ("/app", false),
                ("Example.com/app", false),
                ("app/", false),
                ("-app", false),
                (&"a".repeat(64), false),
            ],
        );
        check(
            validate_label_value,
            &[
                ("", true),
                ("v1.2_3-x", true),
                ("-x", false),
                ("x-", false),
                ("a b", false),
                ("{{labels.app}}", false),
                (&"a".repeat(64), false),
            ],
        );
    }

    #[test]
    fn selectors_report_every_problem() {
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "bad value".into())])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "x".into(),
                    operator: "Exists".into(),
                    values: Some(vec!["y".into()]),
                },
                LabelSelectorRequirement {
                    key: "z".into(),
                    operator: "Equals".into(),
                    values: Some(vec!["1".into()]),
                },
                LabelSelectorRequirement {
                    key: "ok".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["a".into()]),
                },
            ]),
        };
        let mut errs = ValidationErrors::default();
        validate_label_selector(&sel, "spec.selector", &mut errs);
        assert_eq!(
            errs.paths(),
            vec![
                "spec.selector.matchLabels[app]",
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator",
            ]
        );
    }
}
