//! Benchmark: nightcap vs `tcpdump -w`, same interface, same filter, same run.
//!
//! A sendmmsg UDP generator floods from inside a network namespace for 5 s while nightcap
//! (`nightcap-capture`) and/or tcpdump capture the namespace's eth0: each tool alone (one flood
//! each, back to back) and both at the same time. Printed per scenario and tool: packets sent /
//! captured / dropped, CPU seconds (user+sys, all threads) during the flood, ns of CPU per
//! captured packet, peak RSS, and nightcap/tcpdump ratios. No assertions on time.
//!
//! Run as root: `cargo bench -p nightcap-capture-job --bench capture`.
//! Scenarios: 64-byte packets, all kept; 64-byte packets, 1 in 1000 kept; 1400-byte packets in
//! one file; 1400-byte packets in 100 MB files (nightcap uploads each closed file while it
//! captures, tcpdump `-C 100` only starts new files).
//! Environment: `NIGHTCAP_BENCH_MODES=alone,together`,
//! `NIGHTCAP_BENCH_CASES=64,selective,1400,1400-rotate`,
//! `NIGHTCAP_BENCH_ARGS` (extra nightcap-capture flags), `NIGHTCAP_BENCH_DIR` (spool and files),
//! `NIGHTCAP_BENCH_SECONDS` (flood length, default 5), `NIGHTCAP_BENCH_STDERR=1` (nightcap's log),
//! `NIGHTCAP_BENCH_SENDERS` (generator threads, default 1), `NIGHTCAP_BENCH_PPS` (total send
//! rate in packets per second; default: as fast as the senders can), `NIGHTCAP_BENCH_OUTPUT`
//! (`dir`, the default: a directory in /dev/shm standing in for object storage; `s3`: the test
//! harness's SigV4-checking S3 server in this process on 127.0.0.1, objects kept in /dev/shm —
//! the real multipart protocol, with the server sharing the CPUs; bodies are sent as
//! `UNSIGNED-PAYLOAD`, as over HTTPS, unless `AWS_UNSIGNED_PAYLOAD` says otherwise).

use std::{
    net::IpAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use nightcap_testsupport::{NetnsPod, S3Server};

#[path = "capture/load.rs"]
mod load;

use load::{
    children_cpu, cpu_seconds, flood_len, generate, misdirect_host, paced_rate, peak_rss_mib,
    senders, signal,
};

const BIN: &str = env!("CARGO_BIN_EXE_nightcap-capture");
#[derive(Debug, Default)]
struct Row {
    captured: u64,
    dropped: u64,
    cpu: f64,
    rss: f64,
    /// nightcap: longest time from a file's rotation to its upload being confirmed.
    upload_latency_ms: Option<u64>,
    /// nightcap: CPU seconds from the flood's start to the process's exit (the uploads it
    /// finishes after SIGTERM included; `cpu` stops at SIGTERM).
    cpu_to_exit: Option<f64>,
    /// nightcap with the S3 output: what reached the server.
    stored: Option<Stored>,
}

/// What the S3 server holds after a flood, against what nightcap wrote.
#[derive(Debug, Default)]
struct Stored {
    /// Objects of the run's keys found in the bucket.
    objects: usize,
    /// Their total size.
    bytes: u64,
    /// Files nightcap closed.
    files: u64,
    /// Bytes nightcap wrote.
    written: u64,
}

/// Which tools capture during one flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tools {
    /// nightcap and tcpdump on the same interface at the same time (they share the CPUs).
    Together,
    /// nightcap only.
    Nightcap,
    /// tcpdump only.
    Tcpdump,
}

/// One flood: packets sent and what each running tool did.
struct Run {
    sent: u64,
    /// Of `sent`, datagrams the filter should keep.
    expected: u64,
    load: String,
    nightcap: Option<Row>,
    tcpdump: Option<Row>,
}

/// One benchmark scenario.
struct Case {
    /// Name in NIGHTCAP_BENCH_CASES.
    key: &'static str,
    label: &'static str,
    filter: &'static str,
    /// UDP payload bytes (the frame is 42 bytes longer).
    payload: usize,
    /// One packet in this many matches the filter.
    selective: u64,
    /// Close files at this size (nightcap uploads each to the output while capturing; tcpdump
    /// `-C` starts a new file); None: one file for the whole flood.
    rotate_mb: Option<u64>,
}

/// Where nightcap uploads to (`NIGHTCAP_BENCH_OUTPUT`).
enum Output {
    /// [`output_dir`]: files copied into tmpfs.
    Dir,
    /// The harness's S3 server (objects in tmpfs too).
    S3(S3Server),
}

impl Output {
    fn from_env() -> Self {
        match std::env::var("NIGHTCAP_BENCH_OUTPUT").as_deref() {
            Err(_) | Ok("dir") => Self::Dir,
            Ok("s3") => Self::S3(
                S3Server::try_start_in(&tmpfs().unwrap_or_else(std::env::temp_dir))
                    .unwrap_or_else(|e| panic!("starting the S3 server: {e}")),
            ),
            Ok(other) => panic!("NIGHTCAP_BENCH_OUTPUT: unknown output {other:?} (dir, s3)"),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Self::Dir => "output: a directory in tmpfs",
            Self::S3(_) => "output: S3 server on 127.0.0.1 (SigV4, multipart)",
        }
    }

    /// The object key prefix of one flood's files (the run directory's name).
    fn prefix(dir: &Path) -> String {
        format!(
            "bench/{}",
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )
    }

    /// Points `cmd` (nightcap) at this output for the flood run in `dir`.
    fn configure(&self, cmd: &mut Command, dir: &Path) {
        match self {
            Self::Dir => {
                cmd.args(["--output", &format!("file://{}", output_dir(dir).display())]);
            }
            Self::S3(s3) => {
                cmd.args([
                    "--output",
                    &format!("s3://{}/{}", s3.bucket(), Self::prefix(dir)),
                ])
                .envs(s3.client_env());
                if std::env::var_os("AWS_UNSIGNED_PAYLOAD").is_none() {
                    cmd.env("AWS_UNSIGNED_PAYLOAD", "true");
                }
            }
        }
    }

    /// Objects of `keys` in storage and their total size (S3 only: the server's files).
    fn stored(&self, keys: &[&str]) -> Option<(usize, u64)> {
        let Self::S3(s3) = self else { return None };
        let sizes: Vec<u64> = keys
            .iter()
            .filter_map(|k| std::fs::metadata(s3.bucket_dir().join(k)).ok())
            .map(|m| m.len())
            .collect();
        Some((sizes.len(), sizes.iter().sum()))
    }

    /// Deletes one flood's files.
    fn clean(&self, dir: &Path) {
        match self {
            Self::Dir => drop(std::fs::remove_dir_all(output_dir(dir))),
            Self::S3(s3) => drop(std::fs::remove_dir_all(
                s3.bucket_dir().join(Self::prefix(dir)),
            )),
        }
    }
}

/// /dev/shm, when this machine has it.
fn tmpfs() -> Option<std::path::PathBuf> {
    let shm = Path::new("/dev/shm");
    shm.is_dir().then(|| shm.to_path_buf())
}

/// Where nightcap uploads to by default: a directory in /dev/shm (tmpfs) when there is one,
/// standing in for object storage across the network — the upload costs the capture host CPU
/// (copies) but no disk traffic, so the spool's disk is not also the store's.
fn output_dir(dir: &Path) -> std::path::PathBuf {
    if let Some(shm) = tmpfs() {
        shm.join(format!(
            "nightcap-bench-out-{}-{}",
            std::process::id(),
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ))
    } else {
        dir.join("out")
    }
}

fn start_nightcap(pod: &NetnsPod, case: &Case, dir: &Path, output: &Output) -> Child {
    let rotate = case
        .rotate_mb
        .map_or_else(|| "100GiB".to_owned(), |mb| format!("{mb}MB"));
    let extra: Vec<String> = std::env::var("NIGHTCAP_BENCH_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // The benchmark's ring (16 × 1 MiB, like tcpdump's -B 16384) unless the extra flags size it.
    let ring: &[&str] = if extra.iter().any(|a| a.starts_with("--ring-")) {
        &[]
    } else {
        &["--ring-block-size", "1MiB", "--ring-blocks", "16"]
    };
    let mut cmd = Command::new(BIN);
    cmd.args(["--netns", pod.name(), "--filter", case.filter])
        .args(["--rotate-bytes", &rotate])
        .args(["--spool-max-bytes", "100GiB", "--rotate-seconds", "3600"])
        .args(ring)
        .arg("--spool-dir")
        .arg(dir.join("spool"));
    output.configure(&mut cmd, dir);
    cmd.args(&extra)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("NIGHTCAP_BENCH_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("start nightcap-capture")
}

fn start_tcpdump(pod: &NetnsPod, case: &Case, dir: &Path) -> Child {
    let mut cmd = pod.command("tcpdump");
    cmd.args(["-i", "eth0", "-n", "-B", "16384", "-s", "262144"]);
    if let Some(mb) = case.rotate_mb {
        // -C counts millions of bytes; root keeps its privileges for the new files.
        cmd.args(["-C", &mb.to_string(), "-Z", "root"]);
    }
    cmd.arg("-w")
        .arg(dir.join("tcpdump.pcap"))
        .arg(case.filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcpdump")
}

fn flood(pod: &NetnsPod, case: &Case, dir: &Path, tools: Tools, output: &Output) -> Run {
    // Start from a clean page cache state: the previous run's files are written back first,
    // so neither tool pays for the other's writeback.
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
    std::fs::create_dir_all(dir).expect("bench dir");
    let nightcap = (tools != Tools::Tcpdump).then(|| start_nightcap(pod, case, dir, output));
    let tcpdump = (tools != Tools::Nightcap).then(|| start_tcpdump(pod, case, dir));
    std::thread::sleep(Duration::from_secs(2));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpu0 = |c: &Option<Child>| c.as_ref().map_or(0.0, |c| cpu_seconds(c.id()));
    let (n0, t0) = (cpu0(&nightcap), cpu0(&tcpdump));
    let (sent, expected) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..senders())
            .map(|_| {
                scope.spawn(|| {
                    generate(
                        pod,
                        IpAddr::V4(pod.host_ipv4()),
                        case.payload,
                        case.selective,
                    )
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("generator thread"))
            .fold((0, 0), |(s, m), (ts, tm)| (s + ts, m + tm))
    });
    std::thread::sleep(Duration::from_secs(1));
    let row = |c: &Option<Child>, c0: f64| {
        c.as_ref().map(|c| Row {
            cpu: cpu_seconds(c.id()) - c0,
            rss: peak_rss_mib(c.id()),
            ..Row::default()
        })
    };
    let (mut nc, mut td) = (row(&nightcap, n0), row(&tcpdump, t0));
    if let Some(c) = &tcpdump {
        signal(c, libc::SIGINT);
    }
    if let Some(c) = &nightcap {
        signal(c, libc::SIGTERM);
    }
    if let (Some(c), Some(r)) = (tcpdump, td.as_mut()) {
        let out = c.wait_with_output().expect("tcpdump exits");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let num = |suffix: &str| {
            stderr
                .lines()
                .find(|l| l.ends_with(suffix))
                .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        r.captured = num("packets captured");
        r.dropped = num("packets dropped by kernel");
    }
    if let (Some(c), Some(r)) = (nightcap, nc.as_mut()) {
        let before = children_cpu();
        let out = c.wait_with_output().expect("nightcap exits");
        r.cpu_to_exit = Some(children_cpu() - before - n0);
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        r.captured = json["packets_written"].as_u64().unwrap_or(0);
        r.dropped = json["packets_dropped"].as_u64().unwrap_or(0);
        r.upload_latency_ms = json["max_upload_latency_ms"].as_u64();
        let keys: Vec<&str> = json["keys"]
            .as_array()
            .map(|k| k.iter().filter_map(|k| k.as_str()).collect())
            .unwrap_or_default();
        r.stored = output.stored(&keys).map(|(objects, bytes)| Stored {
            objects,
            bytes,
            files: json["files"].as_u64().unwrap_or(0),
            written: json["bytes"].as_u64().unwrap_or(0),
        });
    }
    let _ = std::fs::remove_dir_all(dir);
    output.clean(dir);
    Run {
        sent,
        expected,
        load: load
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        nightcap: nc,
        tcpdump: td,
    }
}

fn scenario(pod: &NetnsPod, case: &Case, dir: &Path, modes: &[Tools], output: &Output) {
    let selective = case.selective;
    println!(
        "\n## {}: filter '{}', {}-byte frames, {} s flood from {} sender thread(s){}; 1 in {selective} matches; {}; {}",
        case.label,
        case.filter,
        case.payload + 42,
        flood_len().as_secs(),
        senders(),
        match paced_rate() {
            Some(r) => format!(" paced to {:.0} pps in all", r * senders() as f64),
            None => String::new(),
        },
        match case.rotate_mb {
            Some(mb) => format!(
                "{mb} MB files (nightcap uploads each closed file to the output while capturing)"
            ),
            None => "one file".to_owned(),
        },
        output.describe()
    );
    println!(
        "| run | tool | sent (M pps) | captured | dropped | lost vs expected | CPU s (user+sys) | ns CPU / captured pkt | peak RSS MiB | load avg |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let per_pkt = |run: &str, name: &str, sent: u64, expected: u64, load: &str, r: &Row| {
        let lost = expected.saturating_sub(r.captured);
        println!(
            "| {run} | {name} | {sent} ({:.2}) | {} | {} | {lost} ({:.2}%) | {:.3} | {:.0} | {:.1} | {load} |",
            sent as f64 / flood_len().as_secs_f64() / 1e6,
            r.captured,
            r.dropped,
            100.0 * lost as f64 / expected.max(1) as f64,
            r.cpu,
            1e9 * r.cpu / r.captured.max(1) as f64,
            r.rss
        );
        r.cpu / r.captured.max(1) as f64
    };
    let mut alone = (None, None);
    for &mode in modes {
        let run = flood(pod, case, dir, mode, output);
        let name = if mode == Tools::Together {
            "together"
        } else {
            "alone"
        };
        let n = run
            .nightcap
            .as_ref()
            .map(|r| per_pkt(name, "nightcap", run.sent, run.expected, &run.load, r));
        // With one file the only "rotation" is the stop: the latency is the whole upload.
        let rotating = case.rotate_mb.is_some();
        if let Some(ms) = run
            .nightcap
            .as_ref()
            .and_then(|r| r.upload_latency_ms)
            .filter(|_| rotating)
        {
            println!(
                "| {name} | nightcap: longest time from rotation to the file in storage: {ms} ms |||||||||"
            );
        }
        if let Some(s) = run.nightcap.as_ref().and_then(|r| r.stored.as_ref()) {
            let whole = s.objects as u64 == s.files && s.bytes == s.written;
            println!(
                "| {name} | nightcap: in storage {} objects, {} bytes of {} files, {} bytes written{} |||||||||",
                s.objects,
                s.bytes,
                s.files,
                s.written,
                if whole { "" } else { " — MISSING DATA" }
            );
        }
        if let Some(r) = &run.nightcap
            && let Some(total) = r.cpu_to_exit
        {
            println!(
                "| {name} | nightcap: CPU until it exited (uploads after SIGTERM included): {total:.3} s, {:.0} ns / captured pkt |||||||||",
                1e9 * total / r.captured.max(1) as f64
            );
        }
        let t = run
            .tcpdump
            .as_ref()
            .map(|r| per_pkt(name, "tcpdump -w", run.sent, run.expected, &run.load, r));
        if let (Some(n), Some(t)) = (n, t) {
            println!(
                "| together | ratio nightcap/tcpdump CPU per captured packet: {:.2} |||||||||",
                n / t
            );
        }
        match mode {
            Tools::Nightcap => alone.0 = n,
            Tools::Tcpdump => alone.1 = t,
            Tools::Together => {}
        }
    }
    if let (Some(n), Some(t)) = alone {
        println!(
            "| alone | ratio nightcap/tcpdump CPU per captured packet: {:.2} |||||||||",
            n / t
        );
    }
}

fn main() {
    if !nightcap_testsupport::util::is_root() {
        eprintln!("benchmark skipped: needs root (network namespaces, AF_PACKET)");
        return;
    }
    // cargo bench passes --bench; `cargo test --benches` passes nothing we use. Run only as a
    // benchmark so test runs stay short.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let pod = NetnsPod::new();
    let output = Output::from_env();
    misdirect_host(&pod);
    let base = std::env::var_os("NIGHTCAP_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("nightcap-bench-{}", std::process::id()));
    // NIGHTCAP_BENCH_MODES: comma-separated `alone` (each tool by itself, one after the other,
    // same flood) and `together` (both at once). NIGHTCAP_BENCH_CASES: `64`, `selective`,
    // `1400`, `1400-rotate`.
    let modes_env =
        std::env::var("NIGHTCAP_BENCH_MODES").unwrap_or_else(|_| "alone,together".into());
    let mut modes = Vec::new();
    for m in modes_env.split(',') {
        match m.trim() {
            "alone" => modes.extend([Tools::Nightcap, Tools::Tcpdump]),
            "together" => modes.push(Tools::Together),
            "nightcap" => modes.push(Tools::Nightcap),
            "tcpdump" => modes.push(Tools::Tcpdump),
            other => panic!(
                "NIGHTCAP_BENCH_MODES: unknown mode {other:?} (alone, together, nightcap, tcpdump)"
            ),
        }
    }
    let cases = std::env::var("NIGHTCAP_BENCH_CASES")
        .unwrap_or_else(|_| "64,selective,1400,1400-rotate".into());
    let all = [
        Case {
            key: "64",
            label: "64 B, all match",
            filter: "udp",
            payload: 22,
            selective: 1,
            rotate_mb: None,
        },
        Case {
            key: "selective",
            label: "64 B, 1 in 1000 match",
            filter: "udp dst port 7001",
            payload: 22,
            selective: 1000,
            rotate_mb: None,
        },
        Case {
            key: "1400",
            label: "1400 B, all match",
            filter: "udp",
            payload: 1358,
            selective: 1,
            rotate_mb: None,
        },
        Case {
            key: "1400-rotate",
            label: "1400 B, all match, rotating",
            filter: "udp",
            payload: 1358,
            selective: 1,
            rotate_mb: Some(100),
        },
    ];
    for case in &all {
        if !cases.split(',').any(|c| c.trim() == case.key) {
            continue;
        }
        let dir = base.join(case.label.replace([' ', ','], "_"));
        scenario(&pod, case, &dir, &modes, &output);
    }
    let _ = std::fs::remove_dir_all(&base);
}
