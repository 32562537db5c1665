//! nightcap's Kubernetes test cluster: an in-process API server ([`ApiServer`]) and fake kubelets
//! ([`FakeKubelet`]) that kube-rs code runs against unchanged.
//!
//! What it is for: the scheduler, triggers, gateway and capture job talk to Kubernetes through
//! kube-rs `Api`, `watcher`, `reflector` and `Controller`. Their tests start an [`ApiServer`]
//! (discovery, CRUD, list/watch with resourceVersions and 410 Gone, selectors, patches including
//! server-side apply, status subresources, finalizers, garbage collection, CRD schema validation,
//! bearer-token authentication and RBAC-like authorisation from a [`Policy`], TokenReview and
//! SubjectAccessReview) and, when pods must actually run, [`FakeKubelet`]s that run Job pods as
//! local processes or, with [`Runtime::Runc`], as runc containers from [`oci`] images. docs/TESTING.md lists what the server deliberately does not implement.
//!
//! What it must never do: ship in a product binary, listen on anything but 127.0.0.1, or pretend
//! to succeed at something it does not implement (unsupported requests fail like the real
//! server does: 404, 405, 415 or 422 with a `Status` body).

mod error;
mod gc;
mod kinds;
mod kubelet;
mod managed;
pub mod manifests;
pub mod oci;
mod ops;
mod patch;
pub mod policy;
pub mod resources;
mod schema;
pub mod schema_check;
pub mod selectors;
mod server;
pub mod status;
mod store;
mod time;
pub mod validate;

pub use error::{Error, Result};
pub use kubelet::{
    FakeKubelet, KubeletOptions, NetnsSandboxes, PodRef, RuncRuntime, Runtime, Sandbox,
    SandboxProvider,
};
pub use policy::{Policy, Rule, User};
pub use server::{ApiServer, ServerOptions};
