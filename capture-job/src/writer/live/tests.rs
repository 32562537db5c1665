use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use nightcap_storage::{CaptureKey, SumsBuilder, Uploader};

use super::{super::testing::*, *};
use crate::{
    spooled::{ClosedFile, LiveResult},
    writer::{
        Writer,
        pool::{CHUNK, CHUNKS, lock},
    },
};

/// A live-upload set-up on a one-worker runtime, parts of 5 MiB, into `store`.
fn live_into(store: Arc<dyn object_store::ObjectStore>) -> (tokio::runtime::Runtime, Live) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let uploader = Arc::new(Uploader::new(
        store,
        nightcap_storage::KeyPrefix::default(),
        nightcap_storage::UploadOptions {
            part_size: 5 << 20,
            ..Default::default()
        },
    ));
    let live = Live {
        uploader,
        runtime: rt.handle().clone(),
        storage_failing: Arc::default(),
        active: Arc::default(),
        cache_window: LIVE_CACHE_WINDOW,
    };
    (rt, live)
}

/// A writer uploading live into a local store (it writes each part out and lets go of its
/// bytes, as S3 does), keeping `window` bytes of live files out of writeback, and its first
/// file, closed: three parts and a bit, written at the pace of the store (these tests are
/// not about a store that falls behind: an unoptimised SHA-256 is slower than the writer).
struct Paced {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn object_store::ObjectStore>,
    w: Writer,
    rx: tokio::sync::mpsc::UnboundedReceiver<ClosedFile>,
    failing: Arc<AtomicBool>,
    first: ClosedFile,
    size: usize,
    dir: tempfile::TempDir,
    _bucket: tempfile::TempDir,
}

fn paced_live_file(window: u64) -> Paced {
    let bucket = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(bucket.path()).expect("local store"),
    );
    let (rt, mut live) = live_into(store.clone());
    live.cache_window = window;
    let failing = live.storage_failing.clone();
    // The chunks in the pipeline may all be lent on top of these without reaching the limit.
    let in_time = live.max_lent() - CHUNKS - 1;
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = Writer::start(tx, false, Some(live)).expect("writer");
    let size = 3 * (5 << 20) + 12_345;
    write_paced(&w, dir.path(), 0, size, || {
        while lock(&w.shared.free).lent > in_time {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    let first = rx.blocking_recv().expect("first file closed");
    Paced {
        rt,
        store,
        w,
        rx,
        failing,
        first,
        size,
        dir,
        _bucket: bucket,
    }
}

#[test]
fn files_go_live_only_while_storage_is_not_failing() {
    let Paced {
        rt,
        store,
        w,
        mut rx,
        failing,
        first,
        size,
        dir,
        _bucket,
    } = paced_live_file(LIVE_CACHE_WINDOW);
    // Its upload kept up: its copy in the spool was neither written back nor synced.
    assert_eq!(w.shared.written_back.load(Ordering::SeqCst), 0);
    assert_eq!(w.shared.synced.load(Ordering::SeqCst), 0);
    // An upload failed: the next file is uploaded from the spool.
    failing.store(true, Ordering::SeqCst);
    write_one(&w, dir.path(), 1, 1000);
    let second = rx.blocking_recv().expect("second file closed");
    assert!(second.live.is_none(), "not live while storage is failing");
    assert!(
        second.sums.is_some(),
        "hashed while written, for its upload"
    );
    // A file uploaded from the spool is written back and synced.
    assert_eq!(w.shared.written_back.load(Ordering::SeqCst), 1000);
    assert_eq!(w.shared.synced.load(Ordering::SeqCst), 1);
    // Storage is back: live again.
    failing.store(false, Ordering::SeqCst);
    write_one(&w, dir.path(), 2, 1000);
    let third = rx.blocking_recv().expect("third file closed");
    let up = rt
        .block_on(third.live.expect("live once storage works").wait())
        .expect("uploaded");
    assert_eq!(up.bytes, 1000);
    let done = first
        .live
        .expect("the first file was uploaded while written");
    // Hashed by its upload, not by the hasher thread.
    assert!(first.sums.is_none());
    assert_stored(&rt, &*store, &first.key, done, size);
    // Every chunk the upload held came back to the writer.
    assert_eq!(lock(&w.shared.free).lent, 0);
    w.finish().expect("no write error");
}

#[test]
fn a_file_uploaded_while_written_keeps_only_its_last_bytes_out_of_writeback() {
    let Paced {
        rt,
        store,
        w,
        first: f,
        size,
        // Held to the end: the spool and the store.
        dir: _dir,
        _bucket,
        ..
    } = paced_live_file(4 << 20);
    // Written back up to the window before its end at most (a busy syncer may skip a
    // request: the next one covers the range), and not synced.
    let back = w.shared.written_back.load(Ordering::SeqCst);
    assert!(
        back > 0,
        "a file longer than the window is written back behind it"
    );
    assert!(
        back <= (size as u64) - (4 << 20),
        "{back} bytes written back"
    );
    assert_eq!(w.shared.synced.load(Ordering::SeqCst), 0);
    // The spool's copy is whole all the same (the uploader falls back to it).
    assert!(std::fs::read(&f.path).expect("closed file") == pattern(size));
    assert_stored(&rt, &*store, &f.key, f.live.expect("uploaded live"), size);
    w.finish().expect("no write error");
}

#[test]
fn an_upload_that_falls_behind_never_holds_up_the_capture_and_reads_the_rest_from_disk() {
    // O_DIRECT: the rest is read from the disk; write-behind: through the page cache (none
    // of it was written back), and the file was neither written back nor synced.
    for direct in [true, false] {
        falls_behind(direct);
    }
}

fn falls_behind(direct: bool) {
    use object_store::{ObjectStore, memory::InMemory};
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (rt, live) = live_into(store.clone());
    let most = live.max_lent();
    // The runtime's only worker is held: no part is hashed or stored while the file is
    // written, as when the store (or the CPU the uploads get) is far slower than the capture.
    let (hold, held) = std::sync::mpsc::channel::<()>();
    let (busy, is_busy) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = busy.send(());
        let _ = held.recv();
    });
    is_busy.recv().expect("the worker is held");
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = Writer::start(tx, direct, Some(live)).expect("writer");
    // Twice as much as the uploads may hold: the capture never waits for the store.
    let size = 2 * most * CHUNK + 777;
    write_one(&w, dir.path(), 0, size);
    let first = rx.blocking_recv().expect("file closed");
    assert!(
        lock(&w.shared.free).lent <= most,
        "never more lent than allowed"
    );
    let data = std::fs::read(&first.path).expect("closed file");
    assert!(data == pattern(size), "the file holds every byte");
    assert_eq!(w.shared.written_back.load(Ordering::SeqCst), 0);
    assert_eq!(w.shared.synced.load(Ordering::SeqCst), 0);
    drop(hold);
    let done = first.live.expect("still uploaded by its live upload");
    // The parts sent while written, then the rest from the file.
    assert_stored(&rt, &*store, &first.key, done, size);
    assert_eq!(lock(&w.shared.free).lent, 0, "every lent chunk came back");
    w.finish().expect("no write error");
}

/// Waits for a live upload and checks that `store` holds the `size` bytes written, as one
/// multipart object with the right SHA-256.
fn assert_stored(
    rt: &tokio::runtime::Runtime,
    store: &dyn object_store::ObjectStore,
    key: &CaptureKey,
    done: LiveResult,
    size: usize,
) {
    use object_store::ObjectStoreExt;
    let up = rt.block_on(done.wait()).expect("uploaded");
    assert!(up.multipart);
    let mut sums = SumsBuilder::default();
    sums.update(&pattern(size));
    assert_eq!(up.sha256, sums.finish().sha256);
    let prefix = nightcap_storage::KeyPrefix::default();
    let got = rt
        .block_on(async { store.get(&key.to_path(&prefix)).await?.bytes().await })
        .expect("in storage");
    assert!(got.as_ref() == pattern(size), "the bytes written, in order");
}
