//! The CustomResourceDefinitions generated from the Rust types (`nightcap crds`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{CaptureSchedule, CaptureTrigger, PacketCapture};

/// The CRDs of every nightcap resource, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        PacketCapture::crd(),
        CaptureSchedule::crd(),
        CaptureTrigger::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, as written to `manifests/crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
