//! nightcap-storage: where capture files live and how people get them back.
//!
//! - [`layout`]: the object key layout `{prefix}/{namespace}/{capture}/{uid}/{node}/{start}-{seq}.pcapng`
//!   and a parser that refuses anything else;
//! - [`config`]: one [`StoreConfig`] for S3-compatible stores, the local file system, memory, GCS
//!   and Azure, opened as an `Arc<dyn ObjectStore>` plus prefix (and a URL signer when possible);
//! - [`upload`]: the [`Uploader`] the capture engine hands closed files to;
//! - [`list`]: the files of a capture with their metadata; [`retention`]: the TTL sweeper.
//!
//! The download gateway (HTTP, Kubernetes authorisation, files.zip) is the `nightcap-gateway`
//! crate on top of this one.
//!
//! This crate must never let a key leave its `{prefix}/{namespace}/` (every component is
//! validated before any storage call), never hold a whole capture file in memory, never log
//! or serialise credentials, and never link an HTTP server or a Kubernetes client.

pub mod config;
pub mod error;
pub mod layout;
pub mod list;
pub mod meta;
mod probe;
pub mod retention;
pub mod upload;

pub use config::{S3Config, S3Credentials, Store, StoreConfig};
pub use error::{Error, Result};
pub use layout::{CaptureKey, KeyPrefix};
pub use list::{CaptureFileInfo, Lister};
pub use meta::FileMeta;
pub use probe::probe;
pub use retention::{RetentionItem, SweepReport, sweep};
pub use upload::{
    FileSums, LiveDone, LiveStop, LiveUpload, SumsBuilder, UploadOptions, UploadedFile, Uploader,
};
