//! `nightcap-capture` (= `nightcap capture`) end to end: SIGTERM in the middle of a file uploads
//! it to a real S3 server; bad input fails with a clear message, exit ≠ 0 and nothing left
//! behind. Needs root.

mod common;

use std::{
    io::{BufRead, BufReader, Read},
    net::{IpAddr, SocketAddr},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use nightcap_testsupport::{NetnsPod, S3Server, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_nightcap-capture");

fn s3_env(cmd: &mut Command, s3: &S3Server) {
    cmd.envs(s3.client_env()).env_remove("NIGHTCAP_FILTER");
}

/// Starts `cmd` (stdout and stderr piped) and waits until its ring is attached (the log line),
/// passing the log through.
fn start_capturing(cmd: &mut Command) -> std::process::Child {
    let mut child = cmd.spawn().expect("start nightcap-capture");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("Capturing on target") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("nightcap-capture attaches to the pod");
    child
}

/// Waits for `child` to exit successfully and parses its one JSON line.
fn summary_line(child: &mut std::process::Child) -> serde_json::Value {
    let status = child.wait().expect("wait");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    assert!(status.success(), "exit {status}, stdout {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {out}");
    serde_json::from_str(lines[0]).expect("JSON")
}

#[test]
fn sigterm_mid_file_uploads_the_open_file_to_s3() {
    require_root();
    let pod = NetnsPod::new();
    let s3 = S3Server::start();
    let spool = tempdir("cli-spool");
    let mut cmd = Command::new(BIN);
    cmd.args(["--netns", pod.name(), "--filter", "udp dst port 6100"])
        .args(["--output", &format!("s3://{}/captures", s3.bucket())])
        .arg("--spool-dir")
        .arg(spool.path())
        .args(["--rotate-bytes", "100MB", "--name", "sigterm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    s3_env(&mut cmd, &s3);
    let mut child = start_capturing(&mut cmd);
    pod.send_udp(SocketAddr::new(IpAddr::V4(pod.host_ipv4()), 6100), 50, 64)
        .expect("send");
    // SIGTERM at once: the packets are still in the ring's open block (1 s block timeout),
    // which the capture must wait for and write before closing the file.
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let summary = summary_line(&mut child);
    assert_eq!(summary["packets_written"], 50, "{summary}");
    assert_eq!(summary["stop"], "requested");
    let keys = summary["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{summary}");
    let key = keys[0].as_str().expect("key");
    assert!(key.starts_with("captures/local/sigterm/"), "{key}");
    let object = s3.bucket_dir().join(key);
    assert_eq!(
        tshark(&object, &["udp.dstport"]),
        vec!["6100".to_owned(); 50]
    );
    assert_eq!(std::fs::read_dir(spool.path()).expect("spool").count(), 0);
}

#[test]
fn a_file_output_on_the_spool_file_system_gets_the_files_by_hard_link() {
    use std::os::unix::fs::MetadataExt;
    require_root();
    let pod = NetnsPod::new();
    let dir = tempdir("cli-link");
    let spool = dir.path().join("spool");
    let out = dir.path().join("out");
    let mut cmd = Command::new(BIN);
    cmd.args(["--netns", pod.name(), "--filter", "udp dst port 6101"])
        .args(["--output", &format!("file://{}", out.display())])
        .arg("--spool-dir")
        .arg(&spool)
        .args(["--rotate-bytes", "256KiB", "--name", "linked"])
        .env_remove("NIGHTCAP_FILTER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = start_capturing(&mut cmd);
    pod.send_udp(
        SocketAddr::new(IpAddr::V4(pod.host_ipv4()), 6101),
        1000,
        1000,
    )
    .expect("send");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let summary = summary_line(&mut child);
    assert_eq!(summary["packets_written"], 1000, "{summary}");
    let files = summary["files"].as_u64().expect("files");
    assert!(files >= 3, "{summary}");
    // Every file published by link, none copied or uploaded while written.
    assert_eq!(summary["files_linked"], files, "{summary}");
    assert_eq!(summary["files_uploaded_live"], 0, "{summary}");
    let mut ports = Vec::new();
    for key in summary["keys"].as_array().expect("keys") {
        let object = out.join(key.as_str().expect("key"));
        // The spool's name for it is gone: the object is the only link to the file.
        assert_eq!(std::fs::metadata(&object).expect("object").nlink(), 1);
        ports.extend(tshark(&object, &["udp.dstport"]));
    }
    assert_eq!(ports, vec!["6101".to_owned(); 1000]);
    assert_eq!(pcapng_files(&out).len() as u64, files);
    assert_eq!(std::fs::read_dir(&spool).expect("spool").count(), 0);
}

fn assert_fails(args: &[&str], spool: &Path, out: &Path, want: &str) {
    let output = Command::new(BIN)
        .args(args)
        .arg("--spool-dir")
        .arg(spool)
        .args(["--duration", "2s"])
        .env_remove("NIGHTCAP_FILTER")
        .output()
        .expect("run nightcap-capture");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "{args:?} should fail; stderr {stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "{args:?}: no JSON line on bad input"
    );
    assert!(
        stderr.contains(want),
        "{args:?}: expected {want:?} in {stderr}"
    );
    assert!(!spool.exists(), "{args:?} left a spool directory");
    assert!(
        pcapng_files(out).is_empty(),
        "{args:?} left capture files behind"
    );
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing_behind() {
    require_root();
    let pod = NetnsPod::new();
    let dir = tempdir("cli-bad");
    let spool = dir.path().join("spool");
    let out = dir.path().join("out");
    let url = format!("file://{}", out.display());
    let ns = pod.name();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--netns", ns, "--output", &url, "--filter", "udp port"],
            "position 9",
        ),
        (
            vec!["--netns", ns, "--output", &url, "--filter", "port dns"],
            "write 53",
        ),
        (
            vec!["--netns", "nightcap-no-such-ns", "--output", &url],
            "no network namespace",
        ),
        (
            vec!["--netns", ns, "--interface", "nosuch0", "--output", &url],
            "no interface",
        ),
        (
            vec!["--netns", ns, "--output", "file:///proc/1/nightcap-out"],
            "/proc/1/nightcap-out",
        ),
        (
            vec!["--netns", ns, "--output", "ftp://host/dir"],
            "unsupported store scheme",
        ),
        (vec!["--netns", ns, "--output", "not a url"], "not a URL"),
        (
            vec!["--netns", ns, "--output", "file:///sys/kernel"],
            "cannot write to file:///sys/kernel",
        ),
        (
            vec!["--netns", ns, "--output", &url, "--upload-grace", "soon"],
            "--upload-grace",
        ),
        (
            vec!["--netns", ns, "--output", &url, "--snaplen", "10"],
            "--snaplen",
        ),
        (
            vec!["--netns", ns, "--output", &url, "--rotate-bytes", "ten"],
            "--rotate-bytes",
        ),
        (vec!["--output", &url], "nothing to capture"),
    ];
    for (args, want) in cases {
        assert_fails(&args, &spool, &out, want);
    }
}

#[test]
fn local_mode_checks_a_local_output_before_capturing() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use nightcap_api::{PacketCapture, PacketCaptureSpec, PacketCaptureStatus};
    require_root();
    let dir = tempdir("cli-local-probe");
    let mut pc = PacketCapture::new(
        "probe",
        PacketCaptureSpec {
            duration: Some("2s".into()),
            ..PacketCaptureSpec::default()
        },
    );
    pc.metadata.namespace = Some("ns".into());
    pc.metadata.uid = Some("00000000-0000-4000-8000-000000000002".into());
    pc.status = Some(PacketCaptureStatus {
        start_time: Some(Time(jiff::Timestamp::now())),
        ..PacketCaptureStatus::default()
    });
    let capture_file = dir.path().join("capture.json");
    let targets_file = dir.path().join("targets.json");
    let report_file = dir.path().join("report.json");
    std::fs::write(&capture_file, serde_json::to_vec(&pc).expect("JSON")).expect("capture");
    std::fs::write(&targets_file, br#"{"targets":[]}"#).expect("targets");
    let spool = dir.path().join("spool");
    let output = Command::new(BIN)
        .arg("--capture-file")
        .arg(&capture_file)
        .arg("--targets-file")
        .arg(&targets_file)
        .arg("--report-file")
        .arg(&report_file)
        .args(["--node", "node-1", "--output", "file:///sys/kernel"])
        .arg("--spool-dir")
        .arg(&spool)
        .env_remove("NIGHTCAP_FILTER")
        .output()
        .expect("run nightcap-capture");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "unwritable output: {stderr}");
    assert!(
        stderr.contains("cannot write to file:///sys/kernel"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "no JSON line");
    assert!(!report_file.exists(), "nothing reported");
    assert!(!spool.exists(), "no spool directory");
}

#[test]
fn a_run_killed_mid_file_leaves_files_the_next_run_uploads_cut_to_whole_blocks() {
    require_root();
    let pod = NetnsPod::new();
    let s3 = S3Server::start();
    let spool = tempdir("cli-crash");
    let command = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["--netns", pod.name(), "--filter", "udp dst port 6102"])
            .args(["--output", &format!("s3://{}/captures", s3.bucket())])
            .arg("--spool-dir")
            .arg(spool.path())
            .args(["--rotate-bytes", "100MB", "--name", "crashed"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        s3_env(&mut cmd, &s3);
        cmd
    };
    let mut child = start_capturing(&mut command(&[]));
    // ~2 MB: whole 512 KiB chunks of the open file reach the spool, the rest is in memory.
    pod.send_udp(
        SocketAddr::new(IpAddr::V4(pod.host_ipv4()), 6102),
        2000,
        1000,
    )
    .expect("send");
    let partial = (0..400)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::read_dir(spool.path())
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.to_string_lossy().ends_with(".pcapng.partial")
                        && std::fs::metadata(p).is_ok_and(|m| m.len() >= 1 << 20)
                })
        })
        .expect("a MiB of the open file in the spool");
    // A crash: nothing is closed, synced or uploaded.
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let len = std::fs::metadata(&partial).expect("partial").len();
    // A closed file a crash cut short too (one uploaded while written is not synced when
    // closed): a copy under the next sequence number, cut mid-block.
    let name = partial
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let closed_name = name
        .trim_end_matches(".partial")
        .replace("-000000.pcapng", "-000009.pcapng");
    assert_ne!(closed_name, name.trim_end_matches(".partial"), "{name}");
    let closed = spool.path().join(&closed_name);
    let data = std::fs::read(&partial).expect("read");
    std::fs::write(&closed, &data[..(len as usize) - 1003]).expect("closed copy");
    let sidecar = |file: &str| {
        spool
            .path()
            .join(format!("{}.json", file.trim_end_matches(".partial")))
    };
    let side = std::fs::read_to_string(sidecar(&name)).expect("sidecar");
    std::fs::write(
        sidecar(&closed_name),
        side.replace("-000000.pcapng", "-000009.pcapng"),
    )
    .expect("closed sidecar");

    // The next run uploads both, each cut back to its whole blocks, and the spool empties.
    let mut child = start_capturing(&mut command(&["--duration", "1s"]));
    let summary = summary_line(&mut child);
    let keys: Vec<&str> = summary["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert_eq!(keys.len(), 2, "{summary}");
    let mut counts = Vec::new();
    for key in &keys {
        let object = s3.bucket_dir().join(key);
        let size = std::fs::metadata(&object).expect("object").len();
        // What tshark reads without complaint (it refuses a file cut mid-block).
        let ports = tshark(&object, &["udp.dstport"]);
        assert!(ports.iter().all(|p| p == "6102"), "{key}");
        assert!(size < len, "{key}: {size} bytes of {len}");
        counts.push(ports.len());
    }
    counts.sort_unstable();
    // Every whole block of each: ~1 MiB of ~1 kB packets, one fewer where the copy was cut.
    assert!(counts[0] >= 900, "{counts:?}");
    assert!(counts[1] - counts[0] <= 1, "{counts:?}");
    assert_eq!(std::fs::read_dir(spool.path()).expect("spool").count(), 0);
}
