//! Errors, printed like kubectl's: `Error from server (Forbidden): …` plus what to do.

use std::path::PathBuf;

use nightcap_api::ValidationErrors;
use serde::Deserialize;

/// Everything that can go wrong in a verb.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server, the local API or the gateway refused the request.
    #[error("Error from server ({reason}): {message}")]
    Server {
        /// Kubernetes reason (`Forbidden`, `NotFound`, …).
        reason: String,
        /// The server's message.
        message: String,
        /// HTTP status code.
        code: u16,
        /// What to run to find out more, if anything.
        hint: Option<String>,
    },
    /// The capture is invalid; nothing was sent.
    #[error("The PacketCapture {name:?} is invalid: {errors}")]
    Invalid {
        /// The capture's name.
        name: String,
        /// Every problem with its field path.
        errors: ValidationErrors,
    },
    /// A flag's value is wrong.
    #[error("error: {0}")]
    Usage(String),
    /// No connection could be set up (kubeconfig, server URL).
    #[error("error: {0}")]
    Config(String),
    /// Talking to a server failed below HTTP.
    #[error("error: {what}: {source}")]
    Transport {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A downloaded file does not match its recorded SHA-256.
    #[error("error: {path}: SHA-256 {got} does not match the recorded {want}; run download again")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// What was computed.
        got: String,
        /// What the capture recorded.
        want: String,
    },
    /// Local file I/O.
    #[error("error: {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// `pub type Result<T, E = Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A transport error.
    pub fn transport(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Transport {
            what: what.into(),
            source: source.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// The hint printed under the error, if any.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::Server { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }

    /// Whether the server said NotFound.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Server { code: 404, .. })
    }

    /// Adds the `kubectl auth can-i` hint for reading files in `ns` to a 403.
    pub fn with_files_hint(self, ns: &str) -> Self {
        match self {
            Self::Server {
                reason,
                message,
                code: 403,
                ..
            } => Self::Server {
                reason,
                message,
                code: 403,
                hint: Some(format!(
                    "Reading capture files is its own right; check it with:\n  kubectl auth can-i get packetcaptures/files -n {ns}"
                )),
            },
            other => other,
        }
    }
}

/// A Kubernetes `Status` body, or the gateway's `{"error": …}`.
#[derive(Debug, Default, Deserialize)]
struct StatusBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// The reason Kubernetes gives a status code.
pub fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "AlreadyExists",
        410 => "Gone",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    }
}

/// An error from an HTTP response body with a non-success status.
pub fn from_response(code: u16, body: &[u8]) -> Error {
    let parsed: StatusBody = serde_json::from_slice(body).unwrap_or_default();
    let message = parsed
        .message
        .or(parsed.error)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let reason = parsed
        .reason
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| reason_for(code).to_string());
    let hint = (code == 401).then(|| {
        "The token was not accepted: check --token, or the kubeconfig user's credentials.".into()
    });
    Error::Server {
        reason,
        message,
        code,
        hint,
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => Error::Server {
                reason: if status.reason.is_empty() {
                    reason_for(status.code).to_string()
                } else {
                    status.reason.clone()
                },
                message: status.message.clone(),
                code: status.code,
                hint: None,
            },
            other => Error::transport("talking to the API server", other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_kubectl_errors() {
        let cases: &[(u16, &str, &str)] = &[
            (
                403,
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"no","reason":"Forbidden","code":403}"#,
                "Error from server (Forbidden): no",
            ),
            (
                403,
                r#"{"error":"alice may not read capture files in team-b"}"#,
                "Error from server (Forbidden): alice may not read capture files in team-b",
            ),
            (404, "gone\n", "Error from server (NotFound): gone"),
            (
                409,
                r#"{"message":"exists","reason":"AlreadyExists","code":409}"#,
                "Error from server (AlreadyExists): exists",
            ),
        ];
        for (code, body, want) in cases {
            assert_eq!(from_response(*code, body.as_bytes()).to_string(), *want);
        }
    }

    #[test]
    fn forbidden_files_get_the_can_i_hint() {
        let e = from_response(403, br#"{"error":"no"}"#).with_files_hint("team-a");
        assert!(
            e.hint().is_some_and(
                |h| h.contains("kubectl auth can-i get packetcaptures/files -n team-a")
            ),
            "{e:?}"
        );
        assert!(
            from_response(404, b"x")
                .with_files_hint("team-a")
                .hint()
                .is_none()
        );
    }
}
