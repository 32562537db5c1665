//! [`OciImage`] — the nightcap image built by `cli/image/build.sh` from a given binary into a
//! temporary directory: an OCI image layout and the image unpacked as an OCI runtime bundle
//! (`config.json` + `rootfs/`, what `runc run --bundle` and a fake kubelet start). Needs root,
//! `umoci` and `runc`; the directory is removed on drop.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{Error, Result, util::is_root};

/// The tag build.sh gives the image in the layout.
pub const TAG: &str = "test";

/// An image built by `cli/image/build.sh` (removed on drop).
#[derive(Debug)]
pub struct OciImage {
    dir: tempfile::TempDir,
    log: String,
}

impl OciImage {
    /// Builds the image from `binary` (e.g. `env!("CARGO_BIN_EXE_nightcap")`, a debug build:
    /// the size target is not checked) and checks it starts, as build.sh does.
    pub fn build(binary: &Path) -> Result<Self> {
        if !is_root() {
            return Err(Error::NotRoot {
                what: "building the image (umoci keeps ownership, runc runs the checks)".into(),
            });
        }
        let dir = tempfile::tempdir().map_err(|source| Error::TempDir {
            base: std::env::temp_dir(),
            source,
        })?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cli/image/build.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg("--binary")
            .arg(binary)
            .args(["--tag", TAG, "--no-size-check", "--out"])
            .arg(dir.path().join("oci"))
            .arg("--bundle")
            .arg(dir.path().join("bundle"))
            .stdin(Stdio::null());
        let output = cmd.output().map_err(|source| Error::Spawn {
            program: "bash cli/image/build.sh".into(),
            hint: "install bash",
            source,
        })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(Error::Command {
                command: format!("{cmd:?}"),
                status: output.status.to_string(),
                stderr: format!(
                    "{}\n{}",
                    stdout.trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        Ok(Self { dir, log: stdout })
    }

    /// The OCI image layout (tag [`TAG`]).
    pub fn layout(&self) -> PathBuf {
        self.dir.path().join("oci")
    }

    /// The unpacked image: `config.json` (as 65532, entrypoint and env of the image) and
    /// `rootfs/`.
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// The image reference skopeo understands: `oci:LAYOUT:TAG`.
    pub fn reference(&self) -> String {
        format!("oci:{}:{TAG}", self.layout().display())
    }

    /// A scratch directory next to the image, removed with it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What build.sh printed (sizes, the reference).
    pub fn log(&self) -> &str {
        &self.log
    }
}
