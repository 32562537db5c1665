//! Storage unreachable for 20 s while files keep closing, then back: every file arrives exactly
//! once, nothing stays in the spool. A TCP forwarder in front of a real S3 server plays the
//! outage (connection refused while down). Needs root.

mod common;

use std::{
    collections::BTreeSet,
    io::copy,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use common::*;
use nightcap_capture_job::{TargetMeta, TargetSpec};
use nightcap_testsupport::{NetnsPod, S3Server, require_root, util::reserve_tcp_port};

/// Forwards every connection on `listener` to `to` (for the life of the test process).
fn forward(listener: TcpListener, to: SocketAddr) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Ok(up) = TcpStream::connect(to) else {
                continue;
            };
            let (mut a, mut b) = (conn, up);
            let (mut a2, mut b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
            std::thread::spawn(move || {
                let _ = copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = copy(&mut b2, &mut a2);
                let _ = a2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
}

#[test]
fn storage_down_for_20s_then_back_every_file_arrives_once() {
    require_root();
    let pod = NetnsPod::new();
    let s3 = S3Server::start();
    let port = reserve_tcp_port().expect("reserve a port");
    let proxy = SocketAddr::from(([127, 0, 0, 1], port.port()));
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(
        s3.object_store_builder()
            .with_endpoint(format!("http://{proxy}"))
            .build()
            .expect("s3 client"),
    );
    let rt = runtime();
    let _g = rt.enter();
    let dir = tempdir("down");
    let mut opts = options(Some("udp dst port 6200"), &dir.path().join("spool"), "down");
    opts.engine.rotate_every = Some(Duration::from_secs(1));
    opts.upload.grace = Duration::from_secs(120);
    let cap = start(opts, store);
    cap.add_target(
        &TargetSpec::Netns {
            name: pod.name().into(),
            interface: None,
        },
        &TargetMeta::default(),
    )
    .expect("attach");
    let outage = Instant::now();
    let mut sent = 0u64;
    while outage.elapsed() < Duration::from_secs(5) {
        pod.send_udp(SocketAddr::new(IpAddr::V4(pod.host_ipv4()), 6200), 10, 100)
            .expect("send");
        sent += 10;
        std::thread::sleep(Duration::from_millis(100));
    }
    cap.stop();
    // Files are closed and waiting in the spool while storage is down.
    std::thread::sleep(Duration::from_secs(1));
    let spooled = pcapng_files(&dir.path().join("spool")).len();
    assert!(spooled >= 4, "closed files wait in the spool: {spooled}");
    while outage.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let listener = TcpListener::bind(proxy).expect("bind the forwarder");
    forward(listener, s3.addr());

    let s = rt.block_on(cap.finish()).expect("finish");
    assert_eq!(s.packets_written, sent, "{s:?}");
    assert!(s.spool_left.is_empty(), "{s:?}");
    // The first file rotated ~1 s into the outage and could only be stored after it (20 s): the
    // reported latency runs from rotation to the confirmed upload.
    assert!(s.max_upload_latency_ms >= Some(15_000), "{s:?}");
    assert_eq!(s.keys.len() as u64, s.files, "{s:?}");
    let unique: BTreeSet<&String> = s.keys.iter().collect();
    assert_eq!(unique.len(), s.keys.len(), "each key once: {:?}", s.keys);
    let objects = pcapng_files(&s3.bucket_dir());
    assert_eq!(objects.len(), s.keys.len(), "{objects:?}");
    let packets: usize = objects
        .iter()
        .map(|o| tshark(o, &["frame.len"]).len())
        .sum();
    assert_eq!(packets as u64, sent);
    assert!(pcapng_files(&dir.path().join("spool")).is_empty());
}
