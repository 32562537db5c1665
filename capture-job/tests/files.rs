//! Files: snap length, rotation by size and by time, the max-files ring, targets added and
//! removed while capturing, the pod-IP resolver. Real traffic through a veth; files read back
//! with tshark. Needs root.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use common::*;
use nightcap_capture_job::{TargetMeta, TargetSpec, target};
use nightcap_storage::{FileMeta, UploadOptions};
use nightcap_testsupport::{NetnsPod, S3Server, require_root};
use object_store::{ObjectStore, ObjectStoreExt};

fn pod_target(pod: &NetnsPod) -> TargetSpec {
    TargetSpec::Netns {
        name: pod.name().into(),
        interface: None,
    }
}

fn to_host(pod: &NetnsPod, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(pod.host_ipv4()), port)
}

#[test]
fn snaplen_truncates_in_the_kernel() {
    require_root();
    let pod = NetnsPod::new();
    let rt = runtime();
    let _g = rt.enter();
    let dir = tempdir("snap");
    let mut opts = options(Some("udp dst port 6001"), &dir.path().join("spool"), "snap");
    opts.engine.snaplen = 100;
    let cap = start(opts, local_store(&dir.path().join("out")));
    cap.add_target(&pod_target(&pod), &TargetMeta::default())
        .expect("attach");
    pod.send_udp(to_host(&pod, 6001), 10, 500).expect("send");
    std::thread::sleep(Duration::from_millis(200));
    cap.stop();
    let s = rt.block_on(cap.finish()).expect("finish");
    assert_eq!(s.packets_written, 10);
    let files = pcapng_files(&dir.path().join("out"));
    let lines = tshark(&files[0], &["frame.cap_len", "frame.len"]);
    assert_eq!(lines, vec!["100\t542".to_owned(); 10]);
}

#[test]
fn rotation_by_size_gives_full_valid_files() {
    require_root();
    let pod = NetnsPod::new();
    let rt = runtime();
    let _g = rt.enter();
    let dir = tempdir("rot-size");
    let mut opts = options(
        Some("udp dst port 6002"),
        &dir.path().join("spool"),
        "rotsize",
    );
    opts.engine.rotate_bytes = 64 * 1024;
    let cap = start(opts, local_store(&dir.path().join("out")));
    cap.add_target(&pod_target(&pod), &TargetMeta::default())
        .expect("attach");
    // 600 packets of 14+20+8+958 = 1000 bytes; EPB = 32 + 1000 + 4 = 1036 bytes.
    for _ in 0..6 {
        pod.send_udp(to_host(&pod, 6002), 100, 958).expect("send");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    cap.stop();
    let s = rt.block_on(cap.finish()).expect("finish");
    assert_eq!(s.packets_written, 600, "{s:?}");
    assert!(s.max_upload_latency_ms.is_some(), "{s:?}");
    let files = pcapng_files(&dir.path().join("out"));
    // Each file closes at the first packet that brings it to 64 KiB: header blocks plus 64 EPBs
    // (63 x 1036 = 65268 < 65536 - header), so 600 packets make 10 files (9 full + 1 partial).
    assert_eq!(files.len() as u64, s.files);
    let (mut total, mut bytes) = (0, 0);
    for (i, f) in files.iter().enumerate() {
        let n = tshark(f, &["frame.len"]).len();
        let size = std::fs::metadata(f).expect("file").len();
        bytes += size;
        if i + 1 < files.len() {
            assert!(
                (65536..65536 + 1036).contains(&size),
                "{} is {size} bytes",
                f.display()
            );
        }
        total += n;
    }
    assert_eq!(total, 600);
    assert_eq!(files.len(), 600usize.div_ceil(64));
    // The summary's bytes are everything written: header blocks too.
    assert_eq!(s.bytes, bytes, "{s:?}");
}

#[test]
fn large_files_are_uploaded_to_s3_while_they_are_written() {
    require_root();
    let pod = NetnsPod::new();
    let s3 = S3Server::start();
    let rt = runtime();
    let _g = rt.enter();
    let dir = tempdir("live");
    let store: Arc<dyn ObjectStore> = Arc::new(s3.object_store().expect("S3 store"));
    for live in [true, false] {
        let name = if live { "live" } else { "spooled" };
        let mut opts = options(Some("udp dst port 6010"), &dir.path().join(name), name);
        // 20 000 frames of 1400 bytes (EPB 1436 bytes, 28.7 MB): two files of 12 MiB (three
        // 5 MiB parts each) and a third of 3.5 MB (one part).
        opts.engine.rotate_bytes = 12 << 20;
        opts.upload.live = live;
        // Live uploads take the writer's own buffers: they work with O_DIRECT spool files.
        opts.engine.direct_io = live;
        let upload = UploadOptions {
            multipart_threshold: 8 << 20,
            part_size: 5 << 20,
            max_concurrent_parts: 2,
            ..UploadOptions::default()
        };
        let cap = start_with(opts, store.clone(), upload);
        cap.add_target(&pod_target(&pod), &TargetMeta::default())
            .expect("attach");
        // Paced well below what the store takes, so no live upload falls behind.
        for _ in 0..80 {
            pod.send_udp(to_host(&pod, 6010), 250, 1358).expect("send");
            std::thread::sleep(Duration::from_millis(30));
        }
        std::thread::sleep(Duration::from_millis(200));
        cap.stop();
        let s = rt.block_on(cap.finish()).expect("finish");
        assert_eq!((s.packets_written, s.files), (20_000, 3), "{name}: {s:?}");
        // Live unless the store (a debug build here, ~15 MB/s) is still busy with two earlier
        // files when one starts: that one goes through the spool.
        if live {
            assert!(s.files_uploaded_live >= 2, "{s:?}");
        } else {
            assert_eq!(s.files_uploaded_live, 0, "{s:?}");
        }
        assert!(s.spool_left.is_empty(), "{s:?}");
        let mut packets = 0;
        for key in &s.keys {
            let path = object_store::path::Path::from(key.as_str());
            let got = rt.block_on(store.get(&path)).expect("in storage");
            let (meta, sha) = FileMeta::from_attributes(&got.attributes);
            assert!(meta.start.is_some(), "{key}: start recorded");
            let bytes = rt.block_on(got.bytes()).expect("bytes");
            // A live multipart upload declares its attributes before the SHA-256 is known; a
            // file that fits in one part goes up in one PUT with all of them, and so does one
            // uploaded from the spool.
            match sha {
                Some(sha) => assert_eq!(sha, hex_sha256(&bytes), "{key}"),
                None => assert!(live && bytes.len() > 5 << 20, "{key}: SHA-256 recorded"),
            }
            let local = dir.path().join(format!("{name}-{}", packets));
            std::fs::write(&local, &bytes).expect("copy");
            let lines = tshark(&local, &["frame.len"]);
            assert!(lines.iter().all(|l| l == "1400"), "{key}");
            packets += lines.len();
        }
        assert_eq!(packets, 20_000, "{name}: every packet once, in valid files");
        let spool = dir.path().join(name);
        let left = std::fs::read_dir(&spool).map_or(0, |d| d.count());
        assert_eq!(left, 0, "{name}: the spool is empty");
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn rotation_by_time_closes_files_at_their_age() {
    require_root();
    let pod = NetnsPod::new();
    let rt = runtime();
    let _g = rt.enter();
    let dir = tempdir("rot-time");
    let mut opts = options(
        Some("udp dst port 6003"),
        &dir.path().join("spool"),
        "rottime",
    );
    opts.engine.rotate_every = Some(Duration::from_secs(1));
    let cap = start(opts, local_store(&dir.path().join("out")));
    cap.add_target(&pod_target(&pod), &TargetMeta::default())
        .expect("attach");
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        pod.send_udp(to_host(&pod, 6003), 1, 10).expect("send");
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    cap.stop();
    let s = rt.block_on(cap.finish()).expect("finish");
    assert_eq!(s.packets_written, sent);
    let files = pcapng_files(&dir.path().join("out"));
    // 3.5 s of traffic in files of at most 1 s: 4 files (a file opens at its first packet).
    assert!((4..=5).contains(&files.len()), "{} files", files.len());
    for f in &files {
        let ts: Vec<f64> = tshark(f, &["frame.time_epoch"])
            .iter()
            .map(|t| t.parse().expect("epoch"))
            .collect();
        let span = ts.last().expect("packets") - ts.first().expect("packets");
        assert!(span < 1.0, "{} spans {span} s", f.display());
    }
}

#[test]
fn closed_files_are_in_storage_while_the_capture_keeps_running() {
    require_root();
    let pod = NetnsPod::new();
    let rt = runtime();
    let _g = rt.enter();
    let dir = tempdir("live");
    let mut opts = options(Some("udp dst port 6005"), &dir.path().join("spool"), "live");
    opts.engine.rotate_bytes = 16 * 1024;
    let out = dir.path().join("out");
    let cap = start(opts, local_store(&out));
    cap.add_target(&pod_target(&pod), &TargetMeta::default())
        .expect("attach");
    // 100 packets of 1000 bytes: six 16 KiB files close, the seventh stays open.
    pod.send_udp(to_host(&pod, 6005), 100, 958).expect("send");
    // A liveness bound, not a performance one: uploads must not wait for the stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pcapng_files(&out).len() < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!cap.is_finished(), "the capture is still running");
    assert_eq!(
        pcapng_files(&out).len(),
        6,
        "closed files uploaded while capturing"
    );
    cap.stop();
    let s = rt.block_on(cap.finish()).expect("finish");
    assert_eq!(s.files, 7, "{s:?}");
    assert_eq!(
        pcapng_files(&out).len(),
        7,
        "the open file is uploaded at the stop"
    );
}

#[test]
fn max_files_keeps_a_ring_of_the_newest() {
    require_root();
    let pod = NetnsPod::new();
    let rt = runtime();
    let _g = rt.enter();
    let dir = tempdir("ring");
    let mut opts = options(Some("udp dst port 6004"), &dir.path().join("spool"), "ring");
    opts.engine.rotate_bytes = 16 * 1024;
    opts.upload.max_files = Some(2);
    let cap = start(opts, local_store(&dir.path().join("out")));
    cap.add_target(&pod_target(&pod), &TargetMeta::default())
        .expect("attach");
    pod.send_udp(to_host(&pod, 6004), 100, 958).expect("send");
    std::thread::sleep(Duration::from_millis(200));
    cap.stop();
    let s = rt.block_on(cap.finish()).expect("finish");
    assert_eq!(s.files, 100u64.div_ceil(16), "{s:?}");
    assert_eq!(s.keys.len(), 2, "{s:?}");
    assert_eq!(s.deleted_keys.len() as u64, s.files - 2);
    let files = pcapng_files(&dir.path().join("out"));
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        names[1].ends_with("-000006.pcapng") && names[0].ends_with("-000005.pcapng"),
        "{names:?}"
    );
    // The spool is empty: every file was confirmed, then deleted locally.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
        .expect("spool")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn targets_added_and_removed_while_running_and_pod_ip_resolution() {
    require_root();
    let a = NetnsPod::new();
    let b = NetnsPod::builder().with_pause().build().expect("pod b");
    // The resolver finds b's namespace by its IP, through /var/run/netns or /proc.
    let found = target::find_by_ip(IpAddr::V4(b.ipv4())).expect("resolve pod ip");
    assert_eq!(found.interface, "eth0");
    let ns = found.netns.clone().expect("not the host namespace");
    assert_eq!(
        nightcap_ebpf::netns::inode(&ns).expect("inode"),
        b.netns_inode().expect("b inode")
    );

    let rt = runtime();
    let _g = rt.enter();
    let dir = tempdir("targets");
    let cap = start(
        options(
            Some("udp dst port 6005"),
            &dir.path().join("spool"),
            "targets",
        ),
        local_store(&dir.path().join("out")),
    );
    let meta = |pod: &str| TargetMeta {
        pod: Some(("team-a".into(), pod.into())),
        pod_uid: Some(format!("uid-{pod}")),
    };
    let ia = cap.add_target(&pod_target(&a), &meta("a")).expect("add a");
    let send = |n_a: usize, n_b: usize| {
        a.send_udp(to_host(&a, 6005), n_a, 10).expect("send a");
        b.send_udp(to_host(&b, 6005), n_b, 10).expect("send b");
        std::thread::sleep(Duration::from_millis(300));
    };
    send(3, 4); // only a is captured
    cap.add_target(&TargetSpec::PodIp(IpAddr::V4(b.ipv4())), &meta("b"))
        .expect("add b by ip");
    std::thread::sleep(Duration::from_millis(100));
    send(5, 6); // both
    cap.remove_target(ia).expect("remove a");
    std::thread::sleep(Duration::from_millis(200));
    send(7, 8); // only b
    cap.stop();
    let s = rt.block_on(cap.finish()).expect("finish");
    assert_eq!(s.packets_written, 3 + 5 + 6 + 8, "{s:?}");
    let files = pcapng_files(&dir.path().join("out"));
    assert_eq!(files.len(), 1);
    let lines = tshark(
        &files[0],
        &["frame.interface_name", "frame.interface_description"],
    );
    let count = |name: &str| lines.iter().filter(|l| l.starts_with(name)).count();
    assert_eq!(count("team-a/a\t"), 3 + 5, "{lines:?}");
    assert_eq!(count("team-a/b\t"), 6 + 8, "{lines:?}");
}

#[test]
fn max_packets_and_duration_stop_the_capture() {
    require_root();
    let pod = NetnsPod::new();
    let rt = runtime();
    let _g = rt.enter();
    let dir = tempdir("limits");
    let mut opts = options(
        Some("udp dst port 6006"),
        &dir.path().join("spool"),
        "limits",
    );
    opts.engine.max_packets = Some(25);
    let cap = start(opts, local_store(&dir.path().join("out")));
    cap.add_target(&pod_target(&pod), &TargetMeta::default())
        .expect("attach");
    pod.send_udp(to_host(&pod, 6006), 100, 10).expect("send");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), cap.ended())
            .await
            .expect("the packet limit ends the capture")
    });
    let s = rt.block_on(cap.finish()).expect("finish");
    assert_eq!(s.packets_written, 25, "{s:?}");
    assert_eq!(s.stop, nightcap_capture_job::StopReason::MaxPackets);
    let files = pcapng_files(&dir.path().join("out"));
    assert_eq!(tshark(&files[0], &["frame.len"]).len(), 25);

    let dir = tempdir("limits-duration");
    let mut opts = options(None, &dir.path().join("spool"), "duration");
    opts.engine.duration = Some(Duration::from_secs(1));
    let cap = start(opts, local_store(&dir.path().join("out")));
    cap.add_target(&pod_target(&pod), &TargetMeta::default())
        .expect("attach");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), cap.ended())
            .await
            .expect("the duration ends the capture")
    });
    let s = rt.block_on(cap.finish()).expect("finish");
    assert_eq!(s.stop, nightcap_capture_job::StopReason::Duration);
}

#[test]
fn a_quiet_captures_packets_reach_the_open_spool_file() {
    require_root();
    let pod = NetnsPod::new();
    let rt = runtime();
    let _g = rt.enter();
    let dir = tempdir("quiet");
    let spool = dir.path().join("spool");
    let mut opts = options(Some("udp dst port 6007"), &spool, "quiet");
    // Through the page cache, without uploads while writing: short chunks may be written.
    opts.engine.direct_io = false;
    opts.upload.live = false;
    let cap = start(opts, local_store(&dir.path().join("out")));
    cap.add_target(&pod_target(&pod), &TargetMeta::default())
        .expect("attach");
    // Five small packets: far from filling a 512 KiB chunk, far from any rotation.
    pod.send_udp(to_host(&pod, 6007), 5, 100).expect("send");
    // The datagrams' payload: bytes 0, 1, 2, … 99.
    let payload: Vec<u8> = (0..100u8).collect();
    let in_spool = || {
        std::fs::read_dir(&spool)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .filter_map(|p| std::fs::read(p).ok())
            .map(|d| {
                d.windows(payload.len())
                    .filter(|w| *w == payload.as_slice())
                    .count()
            })
            .sum::<usize>()
    };
    // A liveness bound, not a performance one: the packets must not wait for the file's end.
    let deadline = Instant::now() + Duration::from_secs(30);
    while in_spool() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!cap.is_finished(), "the capture is still running");
    assert_eq!(in_spool(), 5, "the open file holds the packets");
    cap.stop();
    let s = rt.block_on(cap.finish()).expect("finish");
    assert_eq!(s.packets_written, 5, "{s:?}");
}
