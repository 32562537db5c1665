//! cli/image/build.sh builds the nightcap image from this test's binary (the debug build, so no
//! size target applies; build.sh checks that in release builds), and the image holds exactly
//! the binary, its libraries, the CA bundle, passwd/group and /tmp, says how to start, and
//! starts under `runc` as 65532 with a read-only root. Needs root, `umoci` and `runc`
//! (`.ci/setup` installs them).
//! Other tests get the image and its bundle from `nightcap_testsupport::OciImage`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use nightcap_testsupport::{OciImage, image::TAG, require_root};
use serde_json::{Value, json};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_nightcap")
}

fn build_image() -> OciImage {
    require_root();
    for tool in ["umoci", "runc"] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        assert!(found, "{tool} is not installed; bash .ci/setup installs it");
    }
    let image = OciImage::build(Path::new(binary())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        image.log().lines().last(),
        Some(image.reference().as_str()),
        "build.sh ends with the image reference:\n{}",
        image.log()
    );
    image
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &Value) -> PathBuf {
    let digest = digest.as_str().expect("digest string");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The libraries `ldd` resolves for the binary (the loader included), as image paths.
fn ldd_paths(binary: &str) -> BTreeSet<String> {
    run(Command::new("ldd").arg(binary))
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .map(|p| p.trim_start_matches('/').to_string())
        .collect()
}

#[test]
fn image_builds_holds_only_what_it_needs_and_starts() {
    let image = build_image();
    let layout = image.layout();

    // One manifest, one layer; the config says how the image starts and what it is.
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "one manifest in the layout: {index}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        TAG
    );
    let manifest = read_json(&blob(&layout, &manifests[0]["digest"]));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    let config = read_json(&blob(&layout, &manifest["config"]["digest"]));
    assert_eq!(config["config"]["Entrypoint"], json!(["/usr/bin/nightcap"]));
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Env"], json!(["PATH=/usr/bin"]));
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
    let version = run(Command::new(binary()).arg("--version"));
    let labels = &config["config"]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/nightcap-dev/nightcap"
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(
        labels["org.opencontainers.image.version"].as_str(),
        version.trim().strip_prefix("nightcap ")
    );

    // Exactly these files: the binary, its libraries, the CA bundle, passwd and group. No
    // shell, no package manager, nothing else.
    let listing = run(Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(blob(&layout, &layers[0]["digest"])));
    let mut files = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, path) = (words[0], words[1], words[words.len() - 1]);
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        assert_eq!(owner, "0/0", "{path} is owned by root: {line}");
        match mode.as_bytes()[0] {
            b'd' => {
                dirs.insert((path, mode.to_string()));
            }
            b'-' => {
                files.insert(path);
            }
            _ => panic!("only files and directories, no links or devices: {line}"),
        }
    }
    let mut expected: BTreeSet<String> = [
        "usr/bin/nightcap",
        "etc/passwd",
        "etc/group",
        "etc/ssl/certs/ca-certificates.crt",
    ]
    .map(String::from)
    .into();
    let libs = ldd_paths(binary());
    assert!(
        libs.iter().any(|l| l.contains("libc.so")) && libs.iter().any(|l| l.contains("ld-linux")),
        "ldd names libc and the loader: {libs:?}"
    );
    expected.extend(libs);
    assert_eq!(files, expected, "the image's files");
    assert!(
        dirs.contains(&("tmp".to_string(), "drwxrwxrwt".to_string())),
        "an empty /tmp with mode 1777: {dirs:?}"
    );
    for (dir, mode) in &dirs {
        assert!(
            dir == "tmp" || mode == "drwxr-xr-x",
            "{dir} is not writable by others: {mode}"
        );
    }

    // The bundle other tests run: as umoci unpacked it, as 65532.
    let bundle = image.bundle();
    let bundle_config = read_json(&bundle.join("config.json"));
    assert_eq!(bundle_config["process"]["user"]["uid"], 65532);
    assert_eq!(bundle_config["process"]["user"]["gid"], 65532);
    assert_eq!(bundle_config["process"]["args"][0], "/usr/bin/nightcap");
    let passwd = std::fs::read_to_string(bundle.join("rootfs/etc/passwd")).expect("passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    let sections = run(Command::new("readelf")
        .args(["-S", "--wide"])
        .arg(bundle.join("rootfs/usr/bin/nightcap")));
    assert!(!sections.contains(".symtab"), "the binary is stripped");

    // runc runs it from the bundle with a read-only root and prints the binary's version.
    let check = image.dir().join("check");
    std::fs::create_dir(&check).expect("check dir");
    let mut cfg = bundle_config.clone();
    cfg["root"] = json!({"path": bundle.join("rootfs"), "readonly": true});
    cfg["process"]["args"] = json!(["/usr/bin/nightcap", "--version"]);
    cfg["process"]["terminal"] = json!(false);
    std::fs::write(check.join("config.json"), cfg.to_string()).expect("config.json");
    let id = format!("nightcap-image-test-{}", std::process::id());
    let printed = run(Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&check)
        .arg(&id));
    assert_eq!(printed, version, "runc run of the image prints the version");
}
