//! `?labelSelector=` of list requests: the equality-based selectors of `kubectl get -l`
//! (`app=web`, `app==web`, `tier!=db`, `canary`, `!canary`, joined by commas).

use std::collections::BTreeMap;

/// One requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// A parsed selector; the empty one selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector(Vec<Req>);

impl Selector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Equals(k, v) => labels.get(k) == Some(v),
            Req::NotEquals(k, v) => labels.get(k) != Some(v),
            Req::Exists(k) => labels.contains_key(k),
            Req::Absent(k) => !labels.contains_key(k),
        })
    }
}

/// Parses a selector.
pub(crate) fn parse(text: &str) -> Result<Selector, String> {
    let mut reqs = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let word = |s: &str| {
            let s = s.trim();
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "=!(),".contains(c)) {
                Err(format!(
                    "labelSelector {text:?}: {part:?} is not key=value, key!=value, key or !key"
                ))
            } else {
                Ok(s.to_string())
            }
        };
        let req = if let Some((k, v)) = part.split_once("!=") {
            Req::NotEquals(word(k)?, word(v)?)
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Req::Equals(word(k)?, word(v)?)
        } else if let Some(k) = part.strip_prefix('!') {
            Req::Absent(word(k)?)
        } else {
            Req::Exists(word(part)?)
        };
        reqs.push(req);
    }
    Ok(Selector(reqs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_selectors_as_kubectl_takes_them() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app=web,tier!=db", true),
            ("app=web,tier!=front", false),
            ("tier", true),
            ("!tier", false),
            ("!canary", true),
            (" app = web ", true),
        ] {
            assert_eq!(parse(sel).expect(sel).matches(&l), want, "{sel:?}");
        }
        for sel in ["app=", "=web", "app in (web)", "a=b=c"] {
            assert!(parse(sel).is_err(), "{sel:?}");
        }
    }
}
