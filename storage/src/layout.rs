//! The object key layout (DESIGN.md §5), in one place:
//!
//! ```text
//! {prefix}/{namespace}/{capture}/{capture-uid}/{node}/{start-ts}-{seq}.pcapng
//! ```
//!
//! `start-ts` is UTC with milliseconds in the ISO 8601 basic format (`20261122T004312.123Z`), `seq`
//! is a decimal counter of at least six digits (`000042`), so keys of one node sort by time.
//!
//! The namespace is always the first component under the prefix: access control is a prefix
//! check. Every component is validated with the Kubernetes name rules (`nightcap_api::validation`),
//! so a crafted name can never escape its prefix: no `..`, no `%2F`, no non-ASCII look-alikes, no
//! empty component. [`CaptureKey::parse`] accepts exactly the strings [`CaptureKey::to_key`] emits.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use nightcap_api::validation::{
    ValidationErrors, validate_dns1123_label, validate_dns1123_subdomain,
};
use object_store::path::Path;

use crate::error::{Error, Result};

/// File name suffix of every capture file.
pub const SUFFIX: &str = ".pcapng";
/// Format of `start-ts` (chrono syntax).
const TS_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";
/// Longest prefix accepted, in bytes.
const PREFIX_MAX: usize = 512;

/// The store-wide key prefix (possibly empty), validated: `/`-separated segments of ASCII
/// letters, digits, `-`, `_` and `.`, none of them empty, `.` or `..`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// Validates `prefix` (leading and trailing `/` are ignored).
    pub fn new(prefix: &str) -> Result<Self> {
        let trimmed = prefix.trim_matches('/');
        let bad = |reason: &str| Error::InvalidPrefix {
            prefix: prefix.to_string(),
            reason: reason.to_string(),
        };
        if trimmed.len() > PREFIX_MAX {
            return Err(bad("longer than 512 bytes"));
        }
        if trimmed.is_empty() {
            return Ok(Self(String::new()));
        }
        for seg in trimmed.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(bad("empty, '.' or '..' segment"));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(bad(
                    "segments may only hold ASCII letters, digits, '-', '_' and '.'",
                ));
            }
        }
        Ok(Self(trimmed.to_string()))
    }

    /// The prefix without leading or trailing `/` (empty for none).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `{prefix}/{rest}` or just `rest` for an empty prefix.
    fn join(&self, rest: &str) -> String {
        if self.0.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.0)
        }
    }

    /// The prefix as an object store path (the root for an empty prefix).
    pub fn path(&self) -> Path {
        Path::from_iter(self.0.split('/').filter(|s| !s.is_empty()))
    }

    /// `{prefix}/{namespace}/`: every file of a namespace.
    pub fn namespace(&self, namespace: &str) -> Result<Path> {
        check_namespace(namespace)?;
        Ok(to_path(&self.join(namespace)))
    }

    /// `{prefix}/{namespace}/{capture}/`: every file of every incarnation of a capture name.
    pub fn capture(&self, namespace: &str, capture: &str) -> Result<Path> {
        check_namespace(namespace)?;
        check_capture(capture)?;
        Ok(to_path(&self.join(&format!("{namespace}/{capture}"))))
    }

    /// `{prefix}/{namespace}/{capture}/{uid}/`: every file of one capture object.
    pub fn capture_uid(&self, namespace: &str, capture: &str, uid: &str) -> Result<Path> {
        check_namespace(namespace)?;
        check_capture(capture)?;
        check_uid(uid)?;
        Ok(to_path(&self.join(&format!("{namespace}/{capture}/{uid}"))))
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn to_path(validated: &str) -> Path {
    // Components were validated to hold only characters object_store keeps verbatim.
    Path::from_iter(validated.split('/'))
}

/// The key of one capture file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaptureKey {
    /// Namespace of the PacketCapture (DNS-1123 label).
    pub namespace: String,
    /// Name of the PacketCapture (DNS-1123 subdomain).
    pub capture: String,
    /// `metadata.uid` of the PacketCapture (lower-case RFC 4122 UUID text).
    pub uid: String,
    /// Node that captured the file (DNS-1123 subdomain).
    pub node: String,
    /// When the file was opened (millisecond precision; finer parts are dropped).
    pub start: DateTime<Utc>,
    /// Sequence number of the file on this node for this capture.
    pub seq: u64,
}

impl CaptureKey {
    /// Builds a key, validating every component.
    pub fn new(
        namespace: &str,
        capture: &str,
        uid: &str,
        node: &str,
        start: DateTime<Utc>,
        seq: u64,
    ) -> Result<Self> {
        check_namespace(namespace)?;
        check_capture(capture)?;
        check_uid(uid)?;
        check_node(node)?;
        let start = truncate_millis(start);
        Ok(Self {
            namespace: namespace.to_string(),
            capture: capture.to_string(),
            uid: uid.to_string(),
            node: node.to_string(),
            start,
            seq,
        })
    }

    /// The file name: `{start-ts}-{seq}.pcapng`.
    pub fn file_name(&self) -> String {
        format!("{}-{:06}{SUFFIX}", self.start.format(TS_FORMAT), self.seq)
    }

    /// The key relative to the prefix: `{namespace}/{capture}/{uid}/{node}/{file}`.
    pub fn relative(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.namespace,
            self.capture,
            self.uid,
            self.node,
            self.file_name()
        )
    }

    /// The full key under `prefix`.
    pub fn to_key(&self, prefix: &KeyPrefix) -> String {
        prefix.join(&self.relative())
    }

    /// The full key under `prefix` as an object store path.
    pub fn to_path(&self, prefix: &KeyPrefix) -> Path {
        to_path(&self.to_key(prefix))
    }

    /// Parses a full key, refusing anything outside `{prefix}/{namespace}/…` or not in the exact
    /// form [`CaptureKey::to_key`] produces.
    pub fn parse(prefix: &KeyPrefix, key: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidKey {
            key: key.to_string(),
            reason,
        };
        if !key.is_ascii() {
            return Err(bad("keys are ASCII only".into()));
        }
        if key.contains('%') || key.contains('\\') {
            return Err(bad("keys never hold '%' or '\\'".into()));
        }
        let rest = if prefix.as_str().is_empty() {
            key
        } else {
            key.strip_prefix(prefix.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .ok_or_else(|| bad(format!("not under the prefix {:?}", prefix.as_str())))?
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let [namespace, capture, uid, node, file] = parts[..] else {
            return Err(bad(format!(
                "expected {{namespace}}/{{capture}}/{{uid}}/{{node}}/{{start}}-{{seq}}{SUFFIX} \
                 under the prefix, found {} components",
                parts.len()
            )));
        };
        let (start, seq) = parse_file_name(file).map_err(bad)?;
        let parsed = Self::new(namespace, capture, uid, node, start, seq)?;
        if parsed.to_key(prefix) != key {
            return Err(bad("not in canonical form".into()));
        }
        Ok(parsed)
    }

    /// Parses an object store path (see [`CaptureKey::parse`]).
    pub fn parse_path(prefix: &KeyPrefix, path: &Path) -> Result<Self> {
        Self::parse(prefix, path.as_ref())
    }
}

impl fmt::Display for CaptureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.relative())
    }
}

fn truncate_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    DateTime::from_timestamp_millis(ms).unwrap_or(t)
}

fn parse_file_name(file: &str) -> std::result::Result<(DateTime<Utc>, u64), String> {
    let stem = file
        .strip_suffix(SUFFIX)
        .ok_or_else(|| format!("file name {file:?} does not end in {SUFFIX}"))?;
    let (ts, seq) = stem
        .rsplit_once('-')
        .ok_or_else(|| format!("file name {file:?} is not {{start}}-{{seq}}{SUFFIX}"))?;
    if seq.len() < 6 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "sequence {seq:?} must be at least six decimal digits"
        ));
    }
    let seq: u64 = seq
        .parse()
        .map_err(|_| format!("sequence {seq:?} is too large"))?;
    let start = NaiveDateTime::parse_from_str(ts, TS_FORMAT)
        .map_err(|e| format!("start time {ts:?} is not like 20261122T004312.123Z: {e}"))?
        .and_utc();
    Ok((start, seq))
}

fn name_error(what: &'static str, value: &str, errs: ValidationErrors) -> Error {
    Error::InvalidName {
        what,
        value: value.to_string(),
        reason: errs.to_string(),
    }
}

/// A namespace must be a DNS-1123 label.
pub fn check_namespace(value: &str) -> Result<()> {
    let mut errs = ValidationErrors::default();
    validate_dns1123_label(value, "namespace", &mut errs);
    errs.into_result()
        .map_err(|e| name_error("namespace", value, e))
}

/// A capture name must be a DNS-1123 subdomain.
pub fn check_capture(value: &str) -> Result<()> {
    let mut errs = ValidationErrors::default();
    validate_dns1123_subdomain(value, "capture", &mut errs);
    errs.into_result()
        .map_err(|e| name_error("capture", value, e))
}

/// A node name must be a DNS-1123 subdomain.
pub fn check_node(value: &str) -> Result<()> {
    let mut errs = ValidationErrors::default();
    validate_dns1123_subdomain(value, "node", &mut errs);
    errs.into_result().map_err(|e| name_error("node", value, e))
}

/// A uid must be a lower-case RFC 4122 UUID in text form (what Kubernetes assigns).
pub fn check_uid(value: &str) -> Result<()> {
    let b = value.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what: "uid",
            value: value.to_string(),
            reason: "must be a lower-case UUID like 0a1b2c3d-0000-4000-8000-00000000abcd".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const UID: &str = "0a1b2c3d-0000-4000-8000-00000000abcd";

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 0, 43, 12)
            .single()
            .expect("valid")
            + chrono::Duration::milliseconds(123)
    }

    #[test]
    fn formats_the_design_layout() {
        let key = CaptureKey::new("team-a", "web.slow", UID, "node-1.zone", start(), 42)
            .expect("valid key");
        let prefix = KeyPrefix::new("/captures/prod/").expect("valid prefix");
        assert_eq!(
            key.to_key(&prefix),
            format!(
                "captures/prod/team-a/web.slow/{UID}/node-1.zone/20261122T004312.123Z-000042.pcapng"
            )
        );
        assert_eq!(key.to_path(&prefix).as_ref(), key.to_key(&prefix));
        assert_eq!(
            CaptureKey::parse(&prefix, &key.to_key(&prefix)).expect("parses"),
            key
        );
        let empty = KeyPrefix::new("").expect("empty prefix");
        assert_eq!(
            CaptureKey::parse(&empty, &key.to_key(&empty)).expect("parses"),
            key
        );
        assert_eq!(
            prefix
                .capture_uid("team-a", "web.slow", UID)
                .expect("valid")
                .as_ref(),
            format!("captures/prod/team-a/web.slow/{UID}")
        );
        assert_eq!(empty.namespace("team-a").expect("valid").as_ref(), "team-a");
    }

    #[test]
    fn seq_grows_past_six_digits_and_sorts_per_second() {
        let key = CaptureKey::new("a", "c", UID, "n", start(), 12_345_678).expect("valid");
        assert!(key.file_name().ends_with("-12345678.pcapng"));
        let p = KeyPrefix::default();
        assert_eq!(
            CaptureKey::parse(&p, &key.to_key(&p)).expect("parses").seq,
            12_345_678
        );
    }

    #[test]
    fn refuses_keys_outside_the_layout() {
        let p = KeyPrefix::new("captures").expect("valid");
        let f = "20261122T004312.123Z-000001.pcapng";
        let cases = [
            format!("other/team-a/cap/{UID}/node/{f}"),
            format!("capturesX/team-a/cap/{UID}/node/{f}"),
            format!("team-a/cap/{UID}/node/{f}"),
            format!("captures/../team-a/cap/{UID}/node/{f}"),
            format!("captures/team-a/../team-b/{UID}/node/{f}"),
            format!("captures/team-a/cap/{UID}/../{f}"),
            format!("captures/team-a%2Fteam-b/cap/{UID}/node/{f}"),
            format!("captures/team-a/cap%2F..%2Fx/{UID}/node/{f}"),
            format!("captures/team\u{2010}a/cap/{UID}/node/{f}"),
            format!("captures/tеam-a/cap/{UID}/node/{f}"), // Cyrillic 'е'
            format!("captures/team-a/cap/{UID}/node/{f}\u{0}"),
            format!("captures/Team-A/cap/{UID}/node/{f}"),
            format!("captures/team-a/cap/{}/node/{f}", UID.to_uppercase()),
            format!("captures/team-a/cap/not-a-uid/node/{f}"),
            format!("captures/team-a/cap/{UID}/node/x/{f}"),
            format!("captures/team-a/cap/{UID}/node/"),
            format!("captures/team-a/cap/{UID}/node/{f}.tmp"),
            format!("captures/team-a/cap/{UID}/node/20261122T004312Z-000001.pcapng"),
            format!("captures/team-a/cap/{UID}/node/20261122T004312.123Z-1.pcapng"),
            format!("captures/team-a/cap/{UID}/node/20261322T004312.123Z-000001.pcapng"),
            format!("captures//team-a/cap/{UID}/node/{f}"),
            format!("captures/team-a/cap/{UID}/node\\x/{f}"),
            format!("captures/team-a/cap/{UID}/./{f}"),
            format!("/captures/team-a/cap/{UID}/node/{f}"),
        ];
        for key in &cases {
            assert!(CaptureKey::parse(&p, key).is_err(), "accepted {key:?}");
        }
        assert!(CaptureKey::parse(&p, &format!("captures/team-a/cap/{UID}/node/{f}")).is_ok());
    }

    #[test]
    fn refuses_bad_components_when_building() {
        for (ns, cap, uid, node) in [
            ("../x", "c", UID, "n"),
            ("a", "..", UID, "n"),
            ("a", "c/../d", UID, "n"),
            ("a", "c%2Fd", UID, "n"),
            ("a", "c", UID, "n/../m"),
            ("a", "ｃ", UID, "n"), // full-width 'c'
            ("", "c", UID, "n"),
            ("a", "c", "", "n"),
            ("a.b", "c", UID, "n"),
        ] {
            assert!(
                CaptureKey::new(ns, cap, uid, node, start(), 0).is_err(),
                "accepted {ns:?} {cap:?} {uid:?} {node:?}"
            );
        }
        assert!(KeyPrefix::default().capture("a", "../b").is_err());
    }

    #[test]
    fn prefixes_are_validated() {
        for ok in ["", "/", "a", "a/b", "a.b/c_d-e/"] {
            assert!(KeyPrefix::new(ok).is_ok(), "{ok:?}");
        }
        for bad in ["a//b", "a/../b", "./a", "a%2Fb", "ä", "a b", "a\\b"] {
            assert!(KeyPrefix::new(bad).is_err(), "{bad:?}");
        }
    }
}
