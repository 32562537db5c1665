//! OCI images for the fake kubelet's runc mode: building small images with `umoci` (busybox, or
//! host binaries with their shared libraries: [`build_layout`]), unpacking
//! them into runtime bundles, and reading what a kubelet needs from a bundle (entrypoint, cmd,
//! env, working directory, user, image id).
//!
//! A *bundle* is a directory as `umoci unpack --image LAYOUT:TAG DIR` makes it: `DIR/rootfs`
//! and `DIR/config.json` (whose `process.args` is the image's entrypoint followed by its cmd).
//! [`unpack`] also copies the image configuration into `DIR/image-config.json`, which keeps
//! entrypoint and cmd apart (a pod's `args` replace only the cmd). Needs `umoci` on `PATH` and
//! root (umoci preserves file owners).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::error::{Error, Result};

/// The image configuration copied next to the bundle's `config.json` by [`unpack`].
pub const IMAGE_CONFIG_FILE: &str = "image-config.json";

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn umoci(args: &[&str]) -> Result<()> {
    let out = Command::new("umoci")
        .args(args)
        .output()
        .map_err(io("running umoci (install it: apt-get install umoci)"))?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "umoci {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    layout.join("blobs").join(alg).join(hex)
}

/// Unpack `LAYOUT:TAG` into the bundle `dir` (which must not exist) and copy the image
/// configuration to `dir/image-config.json`.
pub fn unpack(layout: &Path, tag: &str, dir: &Path) -> Result<()> {
    let image = format!("{}:{tag}", layout.display());
    umoci(&["unpack", "--image", &image, &dir.to_string_lossy()])?;
    let index = read_json(&layout.join("index.json"))?;
    let manifest = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .ok_or_else(|| Error::Config(format!("{image}: no manifest tagged {tag:?}")))?;
    let manifest = read_json(&blob(layout, manifest))?;
    let config = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| Error::Config(format!("{image}: manifest without a config")))?;
    let mut cfg = read_json(&blob(layout, config))?;
    cfg["nightcap.digest"] = Value::String(config.to_string());
    let text = serde_json::to_string_pretty(&cfg)
        .map_err(|e| Error::Config(format!("{image} config: {e}")))?;
    let out = dir.join(IMAGE_CONFIG_FILE);
    std::fs::write(&out, text).map_err(io(format!("writing {}", out.display())))
}

/// The busybox applets an [`ImageSpec`] with `busybox` links into `/bin`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "cat", "echo", "id", "ls", "mkdir", "grep", "sleep", "touch", "unshare", "ps", "wget",
    "true", "false", "env", "test", "kill", "rm", "head", "tr", "wc", "nsenter",
];

/// What goes into an image built by [`build_layout`].
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// Host files copied into the image: (host path, absolute path in the image).
    pub files: Vec<(PathBuf, PathBuf)>,
    /// Also copy the shared libraries the files load (as `ldd` lists them), at their host paths,
    /// so dynamically linked host binaries run in the image.
    pub shared_libraries: bool,
    /// Copy the host's static `/bin/busybox` with [`BUSYBOX_APPLETS`] as `/bin` symlinks.
    pub busybox: bool,
    /// Image entrypoint and cmd.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// Image user (`UID[:GID]`); `None` is root.
    pub user: Option<String>,
    /// Working directory (default `/`).
    pub workdir: Option<String>,
}

/// Absolute paths of the shared libraries `binary` loads (empty for a static binary).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(io("running ldd"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=>").map_or(l, |(_, p)| p.trim());
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn copy_in(rootfs: &Path, host: &Path, inside: &Path) -> Result<()> {
    let dest = rootfs.join(inside.strip_prefix("/").unwrap_or(inside));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    std::fs::copy(host, &dest)
        .map(|_| ())
        .map_err(io(format!("copying {} into the image", host.display())))
}

/// Build an OCI layout at `layout` (created if missing) with the image `TAG` described by
/// `spec` (a single layer made with `umoci new/unpack/repack/config`; `/tmp` always exists).
pub fn build_layout(layout: &Path, tag: &str, spec: &ImageSpec) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    if spec.busybox && !busybox.exists() {
        return Err(Error::Config(
            "/bin/busybox is missing: apt-get install busybox-static".into(),
        ));
    }
    if !layout.join("index.json").exists() {
        umoci(&["init", "--layout", &layout.to_string_lossy()])?;
    }
    let scratch = tempfile::tempdir().map_err(io("creating a scratch directory"))?;
    let base = format!("{}:{tag}-base", layout.display());
    let work = scratch.path().join("bundle");
    umoci(&["new", "--image", &base])?;
    umoci(&["unpack", "--image", &base, &work.to_string_lossy()])?;
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("tmp")).map_err(io("creating rootfs/tmp"))?;
    if spec.busybox {
        let bin = rootfs.join("bin");
        copy_in(&rootfs, busybox, Path::new("/bin/busybox"))?;
        for applet in BUSYBOX_APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet))
                .map_err(io(format!("linking /bin/{applet}")))?;
        }
    }
    for (host, inside) in &spec.files {
        copy_in(&rootfs, host, inside)?;
        if spec.shared_libraries {
            for lib in shared_libraries(host)? {
                copy_in(&rootfs, &lib, &lib)?;
            }
        }
    }
    umoci(&["repack", "--image", &base, &work.to_string_lossy()])?;
    let mut args: Vec<String> = ["config", "--image", &base, "--tag", tag]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut push = |flag: &str, v: &str| args.extend([flag.to_string(), v.to_string()]);
    for e in &spec.entrypoint {
        push("--config.entrypoint", e);
    }
    for c in &spec.cmd {
        push("--config.cmd", c);
    }
    for e in &spec.env {
        push("--config.env", e);
    }
    push(
        "--config.workingdir",
        spec.workdir.as_deref().unwrap_or("/"),
    );
    if let Some(u) = &spec.user {
        push("--config.user", u);
    }
    umoci(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The busybox image: [`BUSYBOX_APPLETS`], entrypoint `/bin/sh -c`, cmd `echo hello from
/// busybox`, `PATH=/bin`, working directory `/`, the given user (`None`: root).
pub fn busybox_spec(user: Option<&str>) -> ImageSpec {
    ImageSpec {
        busybox: true,
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo hello from busybox".into()],
        env: vec!["PATH=/bin".into()],
        user: user.map(str::to_string),
        ..ImageSpec::default()
    }
}

/// Build the busybox image ([`busybox_spec`]) as `TAG` in `layout`.
pub fn busybox_layout(layout: &Path, tag: &str, user: Option<&str>) -> Result<()> {
    build_layout(layout, tag, &busybox_spec(user))
}

/// Build a busybox image (root user) under `dir/layout` and unpack it to `dir/bundle`; returns
/// the bundle directory, ready for `RuncRuntime::image`.
pub fn busybox_bundle(dir: &Path) -> Result<PathBuf> {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    busybox_layout(&layout, "latest", None)?;
    unpack(&layout, "latest", &bundle)?;
    Ok(bundle)
}

/// What the kubelet takes from an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Image {
    /// The unpacked root filesystem (used read-only, as an overlay's lower layer).
    pub rootfs: PathBuf,
    /// Entrypoint; when the bundle has no image configuration, the whole `process.args`.
    pub entrypoint: Vec<String>,
    /// Cmd (empty when unknown).
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Image user as umoci resolved it.
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The image configuration digest (`sha256:…`), when known.
    pub digest: Option<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

impl Image {
    /// Read a bundle directory.
    pub(crate) fn from_bundle(dir: &Path) -> Result<Self> {
        let cfg = read_json(&dir.join("config.json"))?;
        let p = &cfg["process"];
        let rootfs = match cfg["root"]["path"].as_str().unwrap_or("rootfs") {
            abs if abs.starts_with('/') => PathBuf::from(abs),
            rel => dir.join(rel),
        };
        let mut image = Self {
            rootfs,
            entrypoint: strings(&p["args"]),
            cmd: vec![],
            env: strings(&p["env"]),
            cwd: p["cwd"].as_str().unwrap_or("/").to_string(),
            uid: p["user"]["uid"].as_u64().unwrap_or(0) as u32,
            gid: p["user"]["gid"].as_u64().unwrap_or(0) as u32,
            additional_gids: p["user"]["additionalGids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_u64().map(|g| g as u32))
                .collect(),
            digest: None,
        };
        let extra = dir.join(IMAGE_CONFIG_FILE);
        if extra.exists() {
            let ic = read_json(&extra)?;
            image.entrypoint = strings(&ic["config"]["Entrypoint"]);
            image.cmd = strings(&ic["config"]["Cmd"]);
            image.env = strings(&ic["config"]["Env"]);
            image.digest = ic["nightcap.digest"].as_str().map(str::to_string);
        }
        Ok(image)
    }
}
