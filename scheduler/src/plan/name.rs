//! Deterministic capture Job names: the planner names the Job it wants on each node, the
//! executors create it under that name.

use sha2::{Digest, Sha256};

/// Longest Job name: the Job controller copies it into the pod label `job-name`, and label
/// values are limited to 63 characters.
pub const MAX_JOB_NAME: usize = 63;
const PREFIX: &str = "nc";
const HASH_LEN: usize = 10;

/// The Job name for (capture, node): `nc-<capture>-<node>-<hash>`, a DNS-1123 label of at most
/// 63 characters. The readable parts are shortened to fit; the hash (SHA-256 over namespace,
/// name, UID and node) keeps names of different captures or nodes apart, and a restarted
/// scheduler computes the same name, so it never creates a second Job for a node.
pub fn job_name(namespace: &str, capture: &str, uid: &str, node: &str) -> String {
    let mut h = Sha256::new();
    for part in [namespace, capture, uid, node] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hash = &hex::encode(h.finalize())[..HASH_LEN];
    let capture = label_safe(capture);
    let node = label_safe(node);
    // nc-<capture>-<node>-<hash>: three dashes.
    let budget = MAX_JOB_NAME - PREFIX.len() - HASH_LEN - 3;
    let (c, n) = split_budget(capture.len(), node.len(), budget);
    let capture = capture[..c].trim_end_matches('-');
    let node = node[..n].trim_end_matches('-');
    let mut name = String::with_capacity(MAX_JOB_NAME);
    name.push_str(PREFIX);
    for part in [capture, node, hash] {
        if !part.is_empty() {
            name.push('-');
            name.push_str(part);
        }
    }
    name
}

/// Lower-case letters, digits and single dashes only, no dash at either end.
fn label_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Shares `budget` characters between two parts: each gets up to half, and what one does not
/// use goes to the other.
fn split_budget(a: usize, b: usize, budget: usize) -> (usize, usize) {
    let half = budget / 2;
    match (a <= half, b <= budget - half) {
        (true, _) => (a, b.min(budget - a)),
        (false, true) => (a.min(budget - b), b),
        (false, false) => (half, budget - half),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns1123_label(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    }

    #[test]
    fn names_are_bounded_dns1123_labels() {
        let long = "a".repeat(253);
        let dotted = "node-1.eu-west-1.compute.internal";
        let cases = [
            ("default", "web", "u1", "node-a"),
            ("default", &long, "u1", dotted),
            ("default", "x", "u1", &long),
            (
                "default",
                "ends-with-dash-at-cut-ends-with-dash-at-cut",
                "u",
                dotted,
            ),
            ("default", "web.v2", "u1", "NODE_A"),
            ("default", "...", "u1", "..."),
        ];
        for (ns, capture, uid, node) in cases {
            let name = job_name(ns, capture, uid, node);
            assert!(
                is_dns1123_label(&name),
                "{name:?} from {capture:?}/{node:?}"
            );
        }
        assert_eq!(
            job_name("default", "web", "u1", "node-a").len(),
            "nc-web-node-a-".len() + HASH_LEN
        );
    }

    #[test]
    fn names_are_deterministic_and_distinct() {
        let a = job_name("default", "web", "uid-1", "node-a");
        assert_eq!(a, job_name("default", "web", "uid-1", "node-a"));
        assert!(a.starts_with("nc-web-node-a-"), "{a}");
        for other in [
            job_name("default", "web", "uid-1", "node-b"),
            job_name("default", "web", "uid-2", "node-a"),
            job_name("other", "web", "uid-1", "node-a"),
            // Same readable parts after shortening, different inputs.
            job_name(
                "default",
                &format!("{}x", "c".repeat(60)),
                "uid-1",
                "node-a",
            ),
            job_name(
                "default",
                &format!("{}y", "c".repeat(60)),
                "uid-1",
                "node-a",
            ),
        ] {
            assert_ne!(a, other);
        }
        let long_x = job_name("default", &format!("{}x", "c".repeat(60)), "u", "n");
        let long_y = job_name("default", &format!("{}y", "c".repeat(60)), "u", "n");
        assert_ne!(long_x, long_y);
    }

    #[test]
    fn budget_is_shared() {
        assert_eq!(split_budget(5, 5, 47), (5, 5));
        assert_eq!(split_budget(5, 100, 47), (5, 42));
        assert_eq!(split_budget(100, 5, 47), (42, 5));
        assert_eq!(split_budget(100, 100, 47), (23, 24));
    }
}
