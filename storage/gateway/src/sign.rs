//! HMAC-SHA256 signatures made by the gateway: object URLs for stores that cannot pre-sign
//! (local file system, memory) and share links. One key signs both, with separate domains, so
//! rotating the key revokes every link and URL handed out.

use std::{fmt, path::Path};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use nightcap_storage::Error as StorageError;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted key.
pub const MIN_KEY_BYTES: usize = 32;
const DOMAIN_OBJECT: &[u8] = b"nightcap object url v1\0";
const DOMAIN_SHARE: &[u8] = b"nightcap share link v1\0";

/// Why a signed URL or link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Signature missing, malformed or wrong (tampered, or signed with a rotated-out key).
    BadSignature,
    /// Valid signature, but past its expiry.
    Expired,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadSignature => {
                "the link's signature is not valid (it was changed, or the gateway key was rotated); ask for a new link"
            }
            Self::Expired => "the link has expired; ask for a new link",
        })
    }
}

/// What a share link grants: files.zip of one capture until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareClaims {
    /// Namespace.
    pub ns: String,
    /// Capture name.
    pub name: String,
    /// Capture uid, when known (a re-created capture of the same name is not covered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// The gateway's signing key.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// A key from bytes (at least [`MIN_KEY_BYTES`]).
    pub fn new(bytes: Vec<u8>) -> Result<Self> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(Error::Config {
                reason: format!(
                    "the signing key has {} bytes; use at least {MIN_KEY_BYTES} random bytes \
                     (e.g. `head -c 32 /dev/urandom | base64`)",
                    bytes.len()
                ),
            });
        }
        Ok(Self(bytes))
    }

    /// A fresh random key (links die when the process restarts).
    pub fn random() -> Self {
        Self(rand::random::<[u8; 32]>().to_vec())
    }

    /// Reads a key file (its trimmed content is the key; a Kubernetes Secret mounted as a file).
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw = std::fs::read(path).map_err(|source| StorageError::LocalIo {
            path: path.to_path_buf(),
            source,
        })?;
        let trimmed = raw.trim_ascii().to_vec();
        Self::new(trimmed)
    }

    fn mac(&self, domain: &[u8], parts: &[&[u8]]) -> HmacSha256 {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(domain);
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    /// Signature (hex) for GET of `key` until `expires` (Unix seconds).
    pub fn sign_object(&self, key: &str, expires: i64) -> String {
        let mac = self.mac(DOMAIN_OBJECT, &[key.as_bytes(), &expires.to_be_bytes()]);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Checks an object URL signature at `now` (Unix seconds).
    pub fn verify_object(
        &self,
        key: &str,
        expires: i64,
        sig: &str,
        now: i64,
    ) -> Result<(), LinkError> {
        let sig = hex::decode(sig).map_err(|_| LinkError::BadSignature)?;
        self.mac(DOMAIN_OBJECT, &[key.as_bytes(), &expires.to_be_bytes()])
            .verify_slice(&sig)
            .map_err(|_| LinkError::BadSignature)?;
        if now >= expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }

    /// A share token: `base64url(claims json).base64url(hmac)`.
    pub fn share_token(&self, claims: &ShareClaims) -> String {
        let body = serde_json::to_vec(claims).unwrap_or_default();
        let sig = self.mac(DOMAIN_SHARE, &[&body]).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    /// Checks a share token at `now` (Unix seconds) and returns its claims.
    pub fn verify_share(&self, token: &str, now: i64) -> Result<ShareClaims, LinkError> {
        let (body, sig) = token.split_once('.').ok_or(LinkError::BadSignature)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| LinkError::BadSignature)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| LinkError::BadSignature)?;
        self.mac(DOMAIN_SHARE, &[&body])
            .verify_slice(&sig)
            .map_err(|_| LinkError::BadSignature)?;
        let claims: ShareClaims =
            serde_json::from_slice(&body).map_err(|_| LinkError::BadSignature)?;
        if now >= claims.exp {
            return Err(LinkError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::new(vec![7u8; 32]).expect("long enough")
    }

    #[test]
    fn object_signatures() {
        let k = key();
        let sig = k.sign_object("p/ns/c/u/n/f.pcapng", 1000);
        assert_eq!(
            k.verify_object("p/ns/c/u/n/f.pcapng", 1000, &sig, 999),
            Ok(())
        );
        assert_eq!(
            k.verify_object("p/ns/c/u/n/f.pcapng", 1000, &sig, 1000),
            Err(LinkError::Expired)
        );
        assert_eq!(
            k.verify_object("p/other/c/u/n/f.pcapng", 1000, &sig, 1),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            k.verify_object("p/ns/c/u/n/f.pcapng", 1001, &sig, 1),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            k.verify_object("p/ns/c/u/n/f.pcapng", 1000, "zz", 1),
            Err(LinkError::BadSignature)
        );
        let rotated = SigningKey::new(vec![8u8; 32]).expect("long enough");
        assert_eq!(
            rotated.verify_object("p/ns/c/u/n/f.pcapng", 1000, &sig, 1),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn share_tokens() {
        let k = key();
        let claims = ShareClaims {
            ns: "a".into(),
            name: "c".into(),
            uid: None,
            exp: 50,
        };
        let t = k.share_token(&claims);
        assert_eq!(k.verify_share(&t, 49), Ok(claims.clone()));
        assert_eq!(k.verify_share(&t, 50), Err(LinkError::Expired));
        // Change the namespace in the body, keep the signature.
        let (_, sig) = t.split_once('.').expect("two parts");
        let forged = ShareClaims {
            ns: "b".into(),
            ..claims
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"));
        assert_eq!(
            k.verify_share(&format!("{body}.{sig}"), 1),
            Err(LinkError::BadSignature)
        );
        for bad in ["", ".", "abc", "a.b.c", &t[1..]] {
            assert_eq!(
                k.verify_share(bad, 1),
                Err(LinkError::BadSignature),
                "{bad}"
            );
        }
        assert!(SigningKey::new(vec![1; 31]).is_err());
    }
}
