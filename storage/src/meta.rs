//! What nightcap records about a file next to it, as object attributes (S3 user metadata
//! `x-amz-meta-nightcap-*`, GCS/Azure metadata). Backends without attributes (the local file
//! system) keep only the bytes; the lister then falls back to the PacketCapture status.

use chrono::{DateTime, SecondsFormat, Utc};
use object_store::{Attribute, AttributeValue, Attributes};

/// Attribute holding the hex SHA-256 of the object.
pub const ATTR_SHA256: &str = "nightcap-sha256";
/// Attribute holding the packet count.
pub const ATTR_PACKETS: &str = "nightcap-packets";
/// Attribute holding the pods (`namespace/name`, comma-separated).
pub const ATTR_PODS: &str = "nightcap-pods";
/// Attribute holding the first packet time (RFC 3339).
pub const ATTR_START: &str = "nightcap-start";
/// Attribute holding the close time (RFC 3339).
pub const ATTR_END: &str = "nightcap-end";
/// Content type of capture files.
pub const CONTENT_TYPE: &str = "application/x-pcapng";
/// Pods lists longer than this are not stored as an attribute (S3 caps user metadata at 2 KiB);
/// the PacketCapture status still has them.
const PODS_ATTR_MAX: usize = 1024;

/// Facts about a capture file the capture engine knows and the key does not hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMeta {
    /// Pods in the file (`namespace/name`).
    pub pods: Vec<String>,
    /// First packet's time (or when the file was opened).
    pub start: Option<DateTime<Utc>>,
    /// When the file was closed.
    pub end: Option<DateTime<Utc>>,
    /// Packets in the file.
    pub packets: Option<u64>,
}

impl FileMeta {
    /// Attributes to store with the object (content type plus `nightcap-*` metadata).
    pub fn to_attributes(&self, sha256: &str) -> Attributes {
        let mut a = self.to_attributes_unhashed();
        a.insert(meta(ATTR_SHA256), sha256.to_string().into());
        a
    }

    /// Attributes without the SHA-256: for an object uploaded while it is still being written
    /// (a multipart upload declares its attributes before the first byte is sent).
    pub fn to_attributes_unhashed(&self) -> Attributes {
        let mut a = Attributes::new();
        a.insert(Attribute::ContentType, AttributeValue::from(CONTENT_TYPE));
        if let Some(p) = self.packets {
            a.insert(meta(ATTR_PACKETS), p.to_string().into());
        }
        let pods = self.pods.join(",");
        let pods_ok = pods
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'/' | b','));
        if !pods.is_empty() && pods.len() <= PODS_ATTR_MAX && pods_ok {
            a.insert(meta(ATTR_PODS), pods.into());
        }
        if let Some(t) = self.start {
            a.insert(meta(ATTR_START), rfc3339(t).into());
        }
        if let Some(t) = self.end {
            a.insert(meta(ATTR_END), rfc3339(t).into());
        }
        a
    }

    /// Reads what [`FileMeta::to_attributes`] wrote; unknown or malformed values are ignored.
    /// Returns the metadata and the SHA-256, if recorded.
    pub fn from_attributes(a: &Attributes) -> (Self, Option<String>) {
        let get = |k: &'static str| a.get(&meta(k)).map(|v| v.as_ref().to_string());
        let time = |k| {
            get(k)
                .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let sha = get(ATTR_SHA256).filter(|s| is_sha256_hex(s));
        (
            Self {
                pods: get(ATTR_PODS)
                    .map(|p| {
                        p.split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
                start: time(ATTR_START),
                end: time(ATTR_END),
                packets: get(ATTR_PACKETS).and_then(|p| p.parse().ok()),
            },
            sha,
        )
    }
}

fn meta(k: &'static str) -> Attribute {
    Attribute::Metadata(k.into())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Whether `s` is 64 lower-case hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn attributes_round_trip() {
        let m = FileMeta {
            pods: vec!["team-a/web-0".into(), "team-a/web-1".into()],
            start: Utc.timestamp_millis_opt(1_700_000_000_123).single(),
            end: Utc.timestamp_millis_opt(1_700_000_060_000).single(),
            packets: Some(42),
        };
        let sha = "a".repeat(64);
        let (back, got) = FileMeta::from_attributes(&m.to_attributes(&sha));
        assert_eq!(back, m);
        assert_eq!(got.as_deref(), Some(sha.as_str()));
    }

    #[test]
    fn oversized_or_odd_pods_are_left_out() {
        let many = FileMeta {
            pods: (0..200).map(|i| format!("ns/pod-{i:04}")).collect(),
            ..FileMeta::default()
        };
        assert!(
            FileMeta::from_attributes(&many.to_attributes("x"))
                .0
                .pods
                .is_empty()
        );
        let odd = FileMeta {
            pods: vec!["ns/pöd".into()],
            ..FileMeta::default()
        };
        assert!(
            FileMeta::from_attributes(&odd.to_attributes("x"))
                .0
                .pods
                .is_empty()
        );
        assert_eq!(FileMeta::from_attributes(&odd.to_attributes("x")).1, None);
    }
}
