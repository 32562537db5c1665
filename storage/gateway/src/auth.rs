//! Who is calling and what they may read.
//!
//! - [`KubernetesAccess`]: the bearer token goes to a TokenReview; the right is a
//!   SubjectAccessReview for verb `get` on `packetcaptures/files` (group `nightcap.dev`) in the
//!   capture's namespace, for the capture's name — a right separate from creating captures.
//! - [`TokenFileAccess`]: local mode; a YAML file maps tokens to a user and its namespaces.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::Path,
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, api::PostParams};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use nightcap_storage::{Error as StorageError, layout::check_namespace};

use crate::error::{Error, Result};

/// An authenticated caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// User name (`system:serviceaccount:ns:name` for service accounts).
    pub name: String,
    /// User uid, if known.
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes from the authenticator (passed on to SubjectAccessReview).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Authentication and authorisation of gateway requests.
#[async_trait::async_trait]
pub trait Access: Send + Sync + fmt::Debug {
    /// The caller a bearer token belongs to, `None` when the token is not valid.
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>>;

    /// Whether `caller` may read the files of capture `name` in `namespace`.
    async fn may_read_files(&self, caller: &Caller, namespace: &str, name: &str) -> Result<bool>;

    /// Whether `caller` may create, stop and delete captures in `namespace` through the API of
    /// `nightcap local` (in a cluster that is the API server's business: never here).
    async fn may_edit(&self, _caller: &Caller, _namespace: &str) -> Result<bool> {
        Ok(false)
    }
}

/// TokenReview + SubjectAccessReview against the Kubernetes API.
#[derive(Clone)]
pub struct KubernetesAccess {
    client: kube::Client,
    audiences: Vec<String>,
}

impl fmt::Debug for KubernetesAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesAccess")
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl KubernetesAccess {
    /// Uses `client` (the gateway's own identity, which needs `create` on `tokenreviews` and
    /// `subjectaccessreviews`). `audiences` restricts accepted tokens (empty: the API server's).
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        Self { client, audiences }
    }
}

#[async_trait::async_trait]
impl Access for KubernetesAccess {
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let done = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| Error::Kube {
                what: "TokenReview".into(),
                source,
            })?;
        let Some(status) = done.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let user = status.user.unwrap_or_default();
        let Some(name) = user.username.filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        Ok(Some(Caller {
            name,
            uid: user.uid,
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        }))
    }

    async fn may_read_files(&self, caller: &Caller, namespace: &str, name: &str) -> Result<bool> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.name.clone()),
                uid: caller.uid.clone(),
                groups: Some(caller.groups.clone()),
                extra: (!caller.extra.is_empty()).then(|| caller.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_string()),
                    verb: Some("get".into()),
                    group: Some(nightcap_api::GROUP.into()),
                    version: Some(nightcap_api::VERSION.into()),
                    resource: Some("packetcaptures".into()),
                    subresource: Some(nightcap_api::FILES_SUBRESOURCE.into()),
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let done = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| Error::Kube {
                what: "SubjectAccessReview".into(),
                source,
            })?;
        Ok(done
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true)))
    }
}

/// The token file of local mode:
///
/// ```yaml
/// tokens:
///   - user: alice
///     token: "long-random-string"      # or sha256: <hex of the token>
///     namespaces: [team-a, team-b]     # "*" for every namespace
///     edit: true                       # nightcap local: may also create/stop/delete captures
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// The tokens.
    pub tokens: Vec<TokenEntry>,
}

/// One token of a [`TokenFile`].
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// User name shown in logs.
    pub user: String,
    /// The token in clear text.
    #[serde(default)]
    pub token: Option<String>,
    /// Or its SHA-256 in hex (so the file need not hold the token).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Namespaces whose captures the token may read; `*` for all.
    pub namespaces: Vec<String>,
    /// Also create, stop and delete captures in those namespaces (`nightcap local`'s API).
    #[serde(default)]
    pub edit: bool,
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("user", &self.user)
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

/// Local-mode access from a [`TokenFile`]. Tokens are looked up by their SHA-256.
#[derive(Debug, Clone)]
pub struct TokenFileAccess {
    by_hash: HashMap<[u8; 32], (String, Vec<String>)>,
    editors: std::collections::HashSet<String>,
}

const MIN_TOKEN_LEN: usize = 16;

impl TokenFileAccess {
    /// From a parsed file; refuses short tokens, bad hashes and duplicates.
    pub fn new(file: TokenFile) -> Result<Self> {
        let bad = |reason: String| Error::Config { reason };
        let mut by_hash = HashMap::new();
        let mut users = std::collections::HashSet::new();
        let mut editors = std::collections::HashSet::new();
        for e in file.tokens {
            if e.edit {
                editors.insert(e.user.clone());
            }
            if !users.insert(e.user.clone()) {
                return Err(bad(format!(
                    "user {:?} appears twice; give each user one entry",
                    e.user
                )));
            }
            let hash: [u8; 32] = match (&e.token, &e.sha256) {
                (Some(t), None) if t.len() >= MIN_TOKEN_LEN => Sha256::digest(t.as_bytes()).into(),
                (Some(_), None) => {
                    return Err(bad(format!(
                        "token of user {:?} is shorter than {MIN_TOKEN_LEN} characters",
                        e.user
                    )));
                }
                (None, Some(h)) => hex::decode(h)
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or_else(|| {
                        bad(format!("sha256 of user {:?} is not 64 hex digits", e.user))
                    })?,
                _ => {
                    return Err(bad(format!(
                        "user {:?} needs exactly one of `token` and `sha256`",
                        e.user
                    )));
                }
            };
            for ns in &e.namespaces {
                if ns != "*" {
                    check_namespace(ns).map_err(|err| bad(err.to_string()))?;
                }
            }
            if by_hash
                .insert(hash, (e.user.clone(), e.namespaces))
                .is_some()
            {
                return Err(bad(format!("user {:?} repeats a token", e.user)));
            }
        }
        Ok(Self { by_hash, editors })
    }

    /// Reads and parses a token file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw = std::fs::read_to_string(path).map_err(|source| StorageError::LocalIo {
            path: path.to_path_buf(),
            source,
        })?;
        let file: TokenFile = serde_yaml::from_str(&raw).map_err(|e| Error::Config {
            reason: format!("token file {}: {e}", path.display()),
        })?;
        Self::new(file)
    }

    fn lookup(&self, token: &str) -> Option<&(String, Vec<String>)> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&hash)
    }
}

#[async_trait::async_trait]
impl Access for TokenFileAccess {
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>> {
        Ok(self.lookup(token).map(|(user, _)| Caller {
            name: user.clone(),
            ..Caller::default()
        }))
    }

    async fn may_read_files(&self, caller: &Caller, namespace: &str, _name: &str) -> Result<bool> {
        // User names are unique in the file (checked when loading).
        Ok(self.by_hash.values().any(|(user, namespaces)| {
            user == &caller.name && namespaces.iter().any(|n| n == "*" || n == namespace)
        }))
    }

    async fn may_edit(&self, caller: &Caller, namespace: &str) -> Result<bool> {
        Ok(self.editors.contains(&caller.name)
            && self.may_read_files(caller, namespace, "").await?)
    }
}
