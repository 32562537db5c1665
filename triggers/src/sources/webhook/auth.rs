//! Webhook authentication: a bearer token or an HMAC-SHA256 signature of the body.

use std::{fmt, path::Path};

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, header::AUTHORIZATION};
use sha2::Sha256;

use super::config::WebhookConfig;
use crate::error::{Error, Result};

/// Checks requests against the configured credentials.
#[derive(Clone)]
pub struct Auth {
    bearer: Option<Vec<u8>>,
    hmac: Option<Vec<u8>>,
    header: HeaderName,
    open: bool,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("bearer", &self.bearer.is_some())
            .field("hmac", &self.hmac.is_some())
            .field("header", &self.header)
            .field("open", &self.open)
            .finish()
    }
}

/// Why a request was not authenticated (said to the caller as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Neither a token nor a signature was sent.
    Missing,
    /// The token is wrong.
    BadToken,
    /// The signature is malformed or does not match the body.
    BadSignature,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => {
                "authentication required: send Authorization: Bearer <token> or a \
                              sha256=<hex> HMAC signature of the body"
            }
            Self::BadToken => "the bearer token is not valid",
            Self::BadSignature => "the HMAC signature does not match the body",
        })
    }
}

fn read_secret(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::SecretRead {
        what,
        path: path.to_owned(),
        source,
    })?;
    let secret = text.trim_end_matches(['\n', '\r']).as_bytes().to_vec();
    if secret.is_empty() {
        return Err(Error::ConfigInvalid {
            field: format!("webhook ({})", path.display()),
            message: format!("the {what} file is empty"),
        });
    }
    Ok(secret)
}

impl Auth {
    /// Reads the configured secrets. Without any, only `allowUnauthenticated: true` is accepted.
    pub fn from_config(cfg: &WebhookConfig) -> Result<Self> {
        let bearer = cfg
            .bearer_token_file
            .as_deref()
            .map(|p| read_secret(p, "webhook bearer token"))
            .transpose()?;
        let hmac = cfg
            .hmac_secret_file
            .as_deref()
            .map(|p| read_secret(p, "webhook HMAC secret"))
            .transpose()?;
        let header = HeaderName::try_from(cfg.signature_header.as_str()).map_err(|e| {
            Error::ConfigInvalid {
                field: "webhook.signatureHeader".into(),
                message: format!("{:?} is not an HTTP header name: {e}", cfg.signature_header),
            }
        })?;
        if bearer.is_none() && hmac.is_none() && !cfg.allow_unauthenticated {
            return Err(Error::ConfigInvalid {
                field: "webhook".into(),
                message: "set bearerTokenFile and/or hmacSecretFile (or allowUnauthenticated: \
                          true behind an authenticating proxy)"
                    .into(),
            });
        }
        Ok(Self {
            bearer,
            hmac,
            header,
            open: cfg.allow_unauthenticated,
        })
    }

    /// Credentials from memory (tests, embedding).
    pub fn new(bearer: Option<&str>, hmac: Option<&str>) -> Self {
        Self {
            bearer: bearer.map(|b| b.as_bytes().to_vec()),
            hmac: hmac.map(|h| h.as_bytes().to_vec()),
            header: HeaderName::from_static("x-nightcap-signature"),
            open: bearer.is_none() && hmac.is_none(),
        }
    }

    /// Accepts the request when a valid token or a valid signature is present.
    pub fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Denied> {
        let mut denied = Denied::Missing;
        if let (Some(want), Some(got)) = (&self.bearer, headers.get(AUTHORIZATION)) {
            let got = got.as_bytes();
            let token = got
                .strip_prefix(b"Bearer ")
                .or_else(|| got.strip_prefix(b"bearer "));
            match token {
                Some(t) if constant_time_eq(t.trim_ascii(), want) => return Ok(()),
                _ => denied = Denied::BadToken,
            }
        }
        if let (Some(key), Some(sig)) = (&self.hmac, headers.get(&self.header)) {
            if verify_signature(key, sig.as_bytes(), body) {
                return Ok(());
            }
            denied = Denied::BadSignature;
        }
        if self.open && denied == Denied::Missing {
            return Ok(());
        }
        Err(denied)
    }
}

/// `sha256=<hex>` (or bare hex) HMAC-SHA256 of `body` with `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn verify_signature(key: &[u8], header: &[u8], body: &[u8]) -> bool {
    let text = header.trim_ascii();
    let hex_part = text.strip_prefix(b"sha256=").unwrap_or(text);
    let Ok(sig) = hex::decode(hex_part) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn tokens_and_signatures() {
        let auth = Auth::new(Some("s3cret"), Some("hmac-key"));
        let body = br#"{"labels":{}}"#;
        let good_sig = sign(b"hmac-key", body);
        let cases: Vec<(HeaderMap, Result<(), Denied>)> = vec![
            (headers(&[("authorization", "Bearer s3cret")]), Ok(())),
            (headers(&[("authorization", "Bearer s3cret ")]), Ok(())),
            (
                headers(&[("authorization", "Bearer wrong")]),
                Err(Denied::BadToken),
            ),
            (
                headers(&[("authorization", "Basic czNjcmV0")]),
                Err(Denied::BadToken),
            ),
            (headers(&[("x-nightcap-signature", &good_sig)]), Ok(())),
            (
                headers(&[(
                    "x-nightcap-signature",
                    good_sig.trim_start_matches("sha256="),
                )]),
                Ok(()),
            ),
            (
                headers(&[("x-nightcap-signature", &sign(b"other", body))]),
                Err(Denied::BadSignature),
            ),
            (
                headers(&[("x-nightcap-signature", "sha256=zz")]),
                Err(Denied::BadSignature),
            ),
            (
                headers(&[
                    ("authorization", "Bearer wrong"),
                    ("x-nightcap-signature", &good_sig),
                ]),
                Ok(()),
            ),
            (headers(&[]), Err(Denied::Missing)),
        ];
        for (h, want) in cases {
            assert_eq!(auth.check(&h, body), want, "{h:?}");
        }
        // The signature covers the body: the same signature on another body fails.
        let h = headers(&[("x-nightcap-signature", &good_sig)]);
        assert_eq!(auth.check(&h, b"{}"), Err(Denied::BadSignature));
    }

    #[test]
    fn credentials_are_required_unless_explicitly_open() {
        let err = Auth::from_config(&WebhookConfig::default()).expect_err("no credentials");
        assert!(err.to_string().contains("set bearerTokenFile"), "{err}");
        let open = Auth::from_config(&WebhookConfig {
            allow_unauthenticated: true,
            ..WebhookConfig::default()
        })
        .expect("explicitly open");
        assert_eq!(open.check(&HeaderMap::new(), b""), Ok(()));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").expect("write");
        let auth = Auth::from_config(&WebhookConfig {
            bearer_token_file: Some(path),
            ..WebhookConfig::default()
        })
        .expect("token file");
        let h = headers(&[("authorization", "Bearer from-file")]);
        assert_eq!(auth.check(&h, b""), Ok(()));
    }
}
