//! The image of capture Jobs when `--capture-image` is not set: the image this scheduler runs
//! from, read from its own Pod (named by `NIGHTCAP_POD_NAME` and `NIGHTCAP_POD_NAMESPACE`, which
//! the Deployment sets from the downward API).
//!
//! The image is pinned to the digest the kubelet resolved for the scheduler's container
//! (`status.containerStatuses[].imageID`) when the spec names a tag: a tag can move, and a
//! capture Job must run the binary whose flags this scheduler writes into it, on every node,
//! even where an older image with the same tag is cached. The spec's repository is kept (the
//! registry, mirror and pull secrets that worked for the scheduler); only the tag becomes the
//! digest. Without a digest in the status (a runtime that reports only an image ID, or a status
//! not written yet) the spec image is used as it is.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use tracing::info;

use crate::{Error, Result};

/// How long reading the own Pod may take at start-up.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Name of the scheduler's container in its Pod (`manifests/scheduler.yaml`).
pub const SCHEDULER_CONTAINER: &str = "scheduler";

/// Where the scheduler finds its own Pod (for the default capture image).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OwnPodArgs {
    /// This scheduler's Pod name (downward API `metadata.name`).
    #[arg(long, env = "NIGHTCAP_POD_NAME")]
    pub pod_name: Option<String>,
    /// This scheduler's Pod namespace (downward API `metadata.namespace`).
    #[arg(long, env = "NIGHTCAP_POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

/// Image and `imagePullPolicy` of capture Jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureImage {
    /// The image reference.
    pub image: String,
    /// `imagePullPolicy`, if any.
    pub pull_policy: Option<String>,
}

/// Where the capture image comes from, decided from flags and environment before any API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// `--capture-image` (with `--capture-image-pull-policy`, if set).
    Flag(CaptureImage),
    /// The scheduler's own Pod; `pull_policy` overrides the container's if set.
    OwnPod {
        /// Namespace of the Pod.
        namespace: String,
        /// Name of the Pod.
        name: String,
        /// `--capture-image-pull-policy`, if set.
        pull_policy: Option<String>,
    },
}

impl ImageSource {
    /// The source the flags name; an error saying what to set when there is none.
    pub fn from_args(
        capture_image: Option<&str>,
        pull_policy: Option<&str>,
        own: &OwnPodArgs,
    ) -> Result<Self> {
        let pull_policy = pull_policy.map(str::to_owned);
        if let Some(image) = capture_image.filter(|i| !i.is_empty()) {
            return Ok(Self::Flag(CaptureImage {
                image: image.to_owned(),
                pull_policy,
            }));
        }
        let non_empty =
            |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        match (non_empty(&own.pod_namespace), non_empty(&own.pod_name)) {
            (Some(namespace), Some(name)) => Ok(Self::OwnPod {
                namespace,
                name,
                pull_policy,
            }),
            (namespace, name) => {
                let missing: Vec<&str> = [
                    name.is_none().then_some("NIGHTCAP_POD_NAME"),
                    namespace.is_none().then_some("NIGHTCAP_POD_NAMESPACE"),
                ]
                .into_iter()
                .flatten()
                .collect();
                Err(Error::Config(format!(
                    "no image for capture Jobs: set --capture-image (NIGHTCAP_CAPTURE_IMAGE), or \
                     let the scheduler use its own image by setting {} from the downward API \
                     (env valueFrom.fieldRef.fieldPath metadata.name and metadata.namespace)",
                    missing.join(" and ")
                )))
            }
        }
    }

    /// The capture image: the flag's, or the own Pod's read through `client`.
    pub async fn resolve(self, client: &Client) -> Result<CaptureImage> {
        let (namespace, name, pull_policy) = match self {
            Self::Flag(image) => return Ok(image),
            Self::OwnPod {
                namespace,
                name,
                pull_policy,
            } => (namespace, name, pull_policy),
        };
        let action = format!("reading its own Pod {namespace}/{name} for the capture image");
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let pod = tokio::time::timeout(READ_TIMEOUT, api.get_opt(&name))
            .await
            .map_err(|_| Error::Timeout {
                action: action.clone(),
            })?
            .map_err(|source| Error::Kube { action, source })?
            .ok_or_else(|| {
                Error::Config(format!(
                    "the scheduler's own Pod {namespace}/{name} (NIGHTCAP_POD_NAMESPACE/\
                     NIGHTCAP_POD_NAME) does not exist; set them from the downward API \
                     (metadata.namespace, metadata.name) or set --capture-image"
                ))
            })?;
        let mut image = image_of(&pod).map_err(|e| {
            Error::Config(format!("Pod {namespace}/{name}: {e}; set --capture-image"))
        })?;
        if pull_policy.is_some() {
            image.pull_policy = pull_policy;
        }
        info!(pod = %format!("{namespace}/{name}"), image = %image.image,
            pull_policy = image.pull_policy.as_deref().unwrap_or(""),
            "Capture Jobs use the scheduler's own image.");
        Ok(image)
    }
}

/// The capture image from the scheduler's Pod: the container named [`SCHEDULER_CONTAINER`],
/// else the only container; its image pinned to the status digest (see the module docs).
pub fn image_of(pod: &Pod) -> std::result::Result<CaptureImage, String> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let container = match containers {
        [only] => only,
        _ => containers
            .iter()
            .find(|c| c.name == SCHEDULER_CONTAINER)
            .ok_or_else(|| {
                let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "no container named {SCHEDULER_CONTAINER:?} among {names:?} and not exactly one"
                )
            })?,
    };
    let spec_image = container
        .image
        .as_deref()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| format!("container {:?} has no image", container.name))?;
    let image_id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|s| s.name == container.name))
        .map(|s| s.image_id.as_str());
    Ok(CaptureImage {
        image: pinned(spec_image, image_id),
        pull_policy: container.image_pull_policy.clone(),
    })
}

/// `spec_image` with its tag replaced by the digest in `image_id`, when `spec_image` has no
/// digest and `image_id` carries one (`[docker-pullable://]repo@sha256:<64 hex>`); otherwise
/// `spec_image` unchanged (an ID like `sha256:…` alone names a local image, not a pullable one).
pub fn pinned(spec_image: &str, image_id: Option<&str>) -> String {
    if spec_image.contains('@') {
        return spec_image.to_owned();
    }
    let digest = image_id
        .and_then(|id| id.rsplit_once('@'))
        .map(|(_, digest)| digest)
        .filter(|d| {
            d.strip_prefix("sha256:")
                .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        });
    let Some(digest) = digest else {
        return spec_image.to_owned();
    };
    // A tag is a `:` after the last `/` (a `:` before it is a registry port).
    let name_start = spec_image.rfind('/').map_or(0, |i| i + 1);
    let repository = match spec_image[name_start..].find(':') {
        Some(colon) => &spec_image[..name_start + colon],
        None => spec_image,
    };
    format!("{repository}@{digest}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pinned_replaces_the_tag_by_the_status_digest() {
        let id = format!("ghcr.io/nightcap-dev/nightcap@{DIGEST}");
        let pullable = format!("docker-pullable://nightcap@{DIGEST}");
        let cases: &[(&str, Option<&str>, String)] = &[
            ("ghcr.io/nightcap-dev/nightcap:0.1.0", Some(&id), format!("ghcr.io/nightcap-dev/nightcap@{DIGEST}")),
            // the spec's repository stays (a mirror's name in the status does not leak in)
            ("mirror.local:5000/nightcap:0.1.0", Some(&id), format!("mirror.local:5000/nightcap@{DIGEST}")),
            ("mirror.local:5000/nightcap", Some(&pullable), format!("mirror.local:5000/nightcap@{DIGEST}")),
            ("nightcap", Some(&pullable), format!("nightcap@{DIGEST}")),
            // already pinned: as it is
            (
                "ghcr.io/nightcap-dev/nightcap@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                Some(&id),
                "ghcr.io/nightcap-dev/nightcap@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff".into(),
            ),
            // no usable digest: the spec image
            ("nightcap:0.1.0", Some(DIGEST), "nightcap:0.1.0".into()),
            ("nightcap:0.1.0", Some(""), "nightcap:0.1.0".into()),
            ("nightcap:0.1.0", None, "nightcap:0.1.0".into()),
            ("nightcap:0.1.0", Some("nightcap@sha256:abc"), "nightcap:0.1.0".into()),
            ("nightcap:0.1.0", Some("nightcap@md5:0123"), "nightcap:0.1.0".into()),
        ];
        for (spec, id, want) in cases {
            assert_eq!(&pinned(spec, *id), want, "spec {spec}, imageID {id:?}");
        }
    }

    fn pod(containers: serde_json::Value, statuses: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "nightcap-scheduler-0", "namespace": "nightcap-system"},
            "spec": {"containers": containers},
            "status": {"containerStatuses": statuses},
        }))
        .expect("pod JSON")
    }

    fn status(name: &str, image_id: &str) -> serde_json::Value {
        json!({"name": name, "image": "x", "imageID": image_id, "ready": true, "restartCount": 0})
    }

    #[test]
    fn image_of_picks_the_scheduler_container_else_the_only_one() {
        let sidecar = json!({"name": "proxy", "image": "proxy:1", "imagePullPolicy": "Always"});
        let scheduler = json!({"name": "scheduler", "image": "nightcap:0.1.0", "imagePullPolicy": "IfNotPresent"});
        let two = pod(
            json!([sidecar, scheduler]),
            json!([
                status("proxy", &format!("proxy@{DIGEST}")),
                status("scheduler", &format!("nightcap@{DIGEST}"))
            ]),
        );
        assert_eq!(
            image_of(&two),
            Ok(CaptureImage {
                image: format!("nightcap@{DIGEST}"),
                pull_policy: Some("IfNotPresent".into()),
            })
        );
        let only = pod(
            json!([{"name": "main", "image": "nightcap:0.1.0"}]),
            json!([]),
        );
        assert_eq!(
            image_of(&only),
            Ok(CaptureImage {
                image: "nightcap:0.1.0".into(),
                pull_policy: None,
            })
        );
        let neither = pod(
            json!([sidecar, {"name": "other", "image": "o:1"}]),
            json!([]),
        );
        let err = image_of(&neither).expect_err("ambiguous");
        assert!(
            err.contains("\"scheduler\"") && err.contains("\"proxy\""),
            "{err}"
        );
    }

    #[test]
    fn from_args_prefers_the_flag_and_names_what_is_missing() {
        let own = OwnPodArgs {
            pod_name: Some("s-0".into()),
            pod_namespace: Some("nightcap-system".into()),
        };
        assert_eq!(
            ImageSource::from_args(Some("img:1"), Some("Always"), &own).expect("flag"),
            ImageSource::Flag(CaptureImage {
                image: "img:1".into(),
                pull_policy: Some("Always".into())
            })
        );
        assert_eq!(
            ImageSource::from_args(None, None, &own).expect("own pod"),
            ImageSource::OwnPod {
                namespace: "nightcap-system".into(),
                name: "s-0".into(),
                pull_policy: None
            }
        );
        for (own, names) in [
            (
                OwnPodArgs::default(),
                "NIGHTCAP_POD_NAME and NIGHTCAP_POD_NAMESPACE",
            ),
            (
                OwnPodArgs {
                    pod_name: Some("s-0".into()),
                    pod_namespace: Some(String::new()),
                },
                "setting NIGHTCAP_POD_NAMESPACE from",
            ),
        ] {
            let err = ImageSource::from_args(Some(""), None, &own)
                .expect_err("no image")
                .to_string();
            assert!(
                err.contains("--capture-image (NIGHTCAP_CAPTURE_IMAGE)"),
                "{err}"
            );
            assert!(err.contains(names), "{err}");
        }
    }
}
