//! How a fake kubelet runs containers: as local processes (the default) or through `runc`.

use std::{collections::BTreeMap, path::PathBuf};

/// The container runtime of a [`FakeKubelet`](crate::FakeKubelet).
#[derive(Debug, Clone, Default)]
pub enum Runtime {
    /// The first container's `command` + `args` run as a local process (the image is ignored);
    /// the service account arrives as a `KUBECONFIG` file.
    #[default]
    Process,
    /// Containers run through `runc` from present images, with the pod spec translated as the
    /// kubelet and containerd's CRI plugin would (see [`RuncRuntime`]).
    Runc(RuncRuntime),
}

/// runc mode: the runc binary and the node's present images. Needs root.
///
/// Each container start is one foreground `runc run` (stdio to the container log) on a fresh
/// container id (`runc://ID` in `containerID`). The root filesystem is an overlay whose lower
/// layer is the image's `rootfs`, which is therefore never written; `readOnlyRootFilesystem`
/// makes the overlay read-only. No image is ever pulled: a pod whose image is not in
/// [`images`](Self::images) stays Pending with `ErrImageNeverPull`.
#[derive(Debug, Clone)]
pub struct RuncRuntime {
    /// The runc binary (default `runc` on `PATH`).
    pub binary: PathBuf,
    /// Present images: image reference as pods write it (`nightcap:dev`) → bundle directory as
    /// `umoci unpack` (or [`oci::unpack`](crate::oci::unpack)) made it.
    pub images: BTreeMap<String, PathBuf>,
}

impl Default for RuncRuntime {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("runc"),
            images: BTreeMap::new(),
        }
    }
}

impl RuncRuntime {
    /// runc from `PATH`, no images.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this runc binary.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Make `reference` present, backed by the unpacked bundle `bundle`.
    pub fn image(mut self, reference: impl Into<String>, bundle: impl Into<PathBuf>) -> Self {
        self.images.insert(reference.into(), bundle.into());
        self
    }

    /// Why runc mode cannot work here (not root, or the binary does not run), if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("runc mode needs root".into());
        }
        match std::process::Command::new(&self.binary)
            .arg("--version")
            .output()
        {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "{} --version failed: {}",
                self.binary.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(format!(
                "cannot run {} ({e}); install runc (apt-get install runc)",
                self.binary.display()
            )),
        }
    }
}
