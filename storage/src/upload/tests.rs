use std::{
    fmt,
    sync::atomic::{AtomicU32, Ordering as AtOrd},
};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use futures::{StreamExt, stream::BoxStream};
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, local::LocalFileSystem,
    memory::InMemory,
};
use sha2::{Digest, Sha256};

use super::{parts::PartBuf, *};
use crate::meta::FileMeta;

const UID: &str = "0a1b2c3d-0000-4000-8000-00000000abcd";

fn key(seq: u64) -> CaptureKey {
    let start = Utc
        .with_ymd_and_hms(2026, 11, 22, 1, 2, 3)
        .single()
        .expect("valid time");
    CaptureKey::new("team-a", "cap", UID, "node-1", start, seq).expect("valid key")
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write temp file");
    p
}

fn small_parts() -> UploadOptions {
    UploadOptions {
        multipart_threshold: 64 * 1024,
        part_size: 40 * 1024,
        max_concurrent_parts: 2,
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        direct_io: true,
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn single_put_and_multipart_store_bytes_and_checksum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = KeyPrefix::new("caps").expect("prefix");
    let up = Uploader::new(store.clone(), prefix.clone(), small_parts());
    for (seq, len, multipart) in [
        (1, 0, false),
        (2, 1000, false),
        (3, 64 * 1024, false),
        (4, 300_001, true),
        // Exactly three parts (the last read finds nothing), and more than one 1 MiB read.
        (5, 3 * 40 * 1024, true),
        (6, (1 << 20) + 4097, true),
    ] {
        let bytes = data(len);
        let local = write_tmp(&dir, &format!("f{seq}"), &bytes);
        let meta = FileMeta {
            pods: vec!["team-a/web-0".into()],
            packets: Some(7),
            ..FileMeta::default()
        };
        let res = up
            .upload_file_with_meta(&local, &key(seq), &meta)
            .await
            .expect("upload");
        assert_eq!(res.multipart, multipart, "len {len}");
        assert_eq!(res.bytes, len as u64);
        assert_eq!(res.sha256, sha(&bytes));
        assert_eq!(res.key, key(seq).to_key(&prefix));
        assert!(res.attributes_stored);
        assert_eq!(res.attempts, 1);
        let got = store.get(&key(seq).to_path(&prefix)).await.expect("get");
        let (m, s) = FileMeta::from_attributes(&got.attributes);
        assert_eq!(s.as_deref(), Some(res.sha256.as_str()));
        assert_eq!(m.packets, Some(7));
        assert_eq!(got.bytes().await.expect("bytes").as_ref(), &bytes[..]);
    }
}

fn sums_of(bytes: &[u8]) -> FileSums {
    let mut b = SumsBuilder::default();
    // In uneven pieces, as a writer feeds them.
    for piece in bytes.chunks(7_777) {
        b.update(piece);
    }
    b.finish()
}

#[tokio::test]
async fn known_sums_are_declared_and_checked_against_the_bytes_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let up = Uploader::new(store.clone(), KeyPrefix::default(), small_parts());
    let mut seq = 0;
    for len in [0, 50_000, 300_001] {
        let bytes = data(len);
        let sums = sums_of(&bytes);
        assert_eq!(sums.len, len as u64);
        assert_eq!(
            sums.sha256,
            sha(&bytes),
            "the builder computes the file's SHA-256"
        );
        seq += 1;
        let local = write_tmp(&dir, &format!("k{seq}"), &bytes);
        let res = up
            .upload_file_with_sums(&local, &key(seq), &FileMeta::default(), Some(&sums))
            .await
            .expect("upload");
        assert_eq!(res.sha256, sums.sha256);
        let got = store
            .get(&key(seq).to_path(&KeyPrefix::default()))
            .await
            .expect("get");
        let (_, declared) = FileMeta::from_attributes(&got.attributes);
        assert_eq!(declared.as_deref(), Some(sums.sha256.as_str()));
        assert_eq!(got.bytes().await.expect("bytes").as_ref(), &bytes[..]);

        // Sums of other bytes (one flipped, or one more): refused, nothing stored.
        let mut other = bytes.clone();
        match other.get_mut(len / 2) {
            Some(b) => *b ^= 0x20,
            None => other.push(0),
        }
        for wrong in [sums_of(&other), sums_of(&[bytes.as_slice(), b"x"].concat())] {
            seq += 1;
            let err = up
                .upload_file_with_sums(&local, &key(seq), &FileMeta::default(), Some(&wrong))
                .await
                .expect_err("sums of other bytes");
            assert!(matches!(err, Error::FileChanged { .. }), "{len}: {err}");
            let get = store.get(&key(seq).to_path(&KeyPrefix::default())).await;
            assert!(
                matches!(get, Err(object_store::Error::NotFound { .. })),
                "{len}: nothing stored"
            );
        }
    }
}

/// Whether the temp directory's file system takes `O_DIRECT`.
fn direct_io_supported(dir: &tempfile::TempDir) -> bool {
    let probe = write_tmp(dir, "probe", b"x");
    LocalFile::open(&probe, true).is_ok_and(|f| f.direct)
}

#[tokio::test]
async fn direct_reads_leave_uploaded_files_out_of_the_page_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    if !direct_io_supported(&dir) {
        eprintln!("skipped: the temp directory's file system refuses O_DIRECT");
        return;
    }
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut seq = 0;
    // A single PUT and a multipart upload with an unaligned tail; read directly, through the
    // page cache (the control: mincore must see those pages), and with a part size O_DIRECT
    // cannot use, which falls back to the page cache.
    for len in [50_000, 300_001] {
        for (direct, part_size, cached) in [
            (true, 40 * 1024, false),
            (false, 40 * 1024, true),
            (true, 40 * 1024 + 1, len > 64 * 1024),
        ] {
            seq += 1;
            let bytes = data(len);
            let local = write_tmp(&dir, &format!("d{seq}"), &bytes);
            nightcap_testsupport::util::drop_from_page_cache(&local).expect("evict");
            let before = nightcap_sys::page_cache::resident_pages(&local).expect("mincore");
            assert_eq!(before, 0, "the file starts out of the cache");
            let opts = UploadOptions {
                direct_io: direct,
                part_size,
                ..small_parts()
            };
            let up = Uploader::new(store.clone(), KeyPrefix::default(), opts);
            let res = up.upload_file(&local, &key(seq)).await.expect("upload");
            assert_eq!(res.sha256, sha(&bytes));
            let got = store
                .get(&key(seq).to_path(&KeyPrefix::default()))
                .await
                .expect("get");
            assert_eq!(got.bytes().await.expect("bytes").as_ref(), &bytes[..]);
            let pages = len.div_ceil(4096);
            let resident = nightcap_sys::page_cache::resident_pages(&local).expect("mincore");
            let what = format!("{len} bytes, direct {direct}, part size {part_size}");
            if cached {
                assert!(resident > pages / 2, "{what}: {resident} of {pages} cached");
            } else {
                assert_eq!(resident, 0, "{what}: {resident} of {pages} cached");
            }
        }
    }
}

#[test]
fn an_unaligned_direct_read_goes_on_through_the_page_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    if !direct_io_supported(&dir) {
        eprintln!("skipped: the temp directory's file system refuses O_DIRECT");
        return;
    }
    let bytes = data(100_000);
    let local = write_tmp(&dir, "u", &bytes);
    let mut file = LocalFile::open(&local, true).expect("open");
    assert!(file.direct);
    let mut buf = PartBuf::detached(128 * 1024);
    // One byte into an aligned buffer: neither address nor length is aligned.
    let n = file.read_full(&mut buf.full()[1..]).expect("read");
    assert_eq!(n, bytes.len());
    assert!(!file.direct, "fell back to the page cache");
    assert_eq!(&buf.full()[1..=n], &bytes[..]);
}

#[tokio::test]
async fn local_file_system_has_no_attributes_and_still_uploads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(root.path()).expect("local fs"));
    let up = Uploader::new(store.clone(), KeyPrefix::default(), small_parts());
    for (seq, len) in [(1, 5000), (2, 200_000)] {
        let bytes = data(len);
        let local = write_tmp(&dir, &format!("f{seq}"), &bytes);
        let res = up.upload_file(&local, &key(seq)).await.expect("upload");
        assert!(!res.attributes_stored);
        assert_eq!(res.sha256, sha(&bytes));
        let on_disk = std::fs::read(root.path().join(key(seq).relative())).expect("object file");
        assert_eq!(on_disk, bytes);
    }
}

#[tokio::test]
async fn missing_local_file_is_a_clear_error() {
    let up = Uploader::new(
        Arc::new(InMemory::new()),
        KeyPrefix::default(),
        small_parts(),
    );
    let err = up
        .upload_file(FsPath::new("/nonexistent/nightcap-file.pcapng"), &key(1))
        .await
        .expect_err("missing file");
    assert!(matches!(err, Error::LocalIo { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/nightcap-file.pcapng")
    );
}

/// A real in-memory store whose writes fail `failures` times with the given error first, and
/// that can run a hook when a multipart upload starts (after the uploader's first read).
struct FailingWrites {
    inner: InMemory,
    failures: AtomicU32,
    permanent: bool,
    on_multipart: Option<Box<dyn Fn() + Send + Sync>>,
    /// When set, multipart parts wait until it reads true (and are counted).
    stall_parts: Option<(tokio::sync::watch::Receiver<bool>, Arc<AtomicU32>)>,
}

impl fmt::Debug for FailingWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailingWrites")
            .field("failures", &self.failures)
            .field("permanent", &self.permanent)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FailingWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FailingWrites({})", self.inner)
    }
}

impl FailingWrites {
    fn fail(&self) -> object_store::Result<()> {
        let left = self.failures.load(AtOrd::SeqCst);
        if left == 0 {
            return Ok(());
        }
        self.failures.store(left - 1, AtOrd::SeqCst);
        let source = "injected failure".into();
        Err(if self.permanent {
            object_store::Error::PermissionDenied {
                path: "x".into(),
                source,
            }
        } else {
            object_store::Error::Generic {
                store: "test",
                source,
            }
        })
    }
}

#[async_trait::async_trait]
impl ObjectStore for FailingWrites {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.fail()?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.fail()?;
        if let Some(hook) = &self.on_multipart {
            hook();
        }
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(match &self.stall_parts {
            Some((open, started)) => Box::new(StalledUpload {
                inner,
                open: open.clone(),
                started: started.clone(),
            }),
            None => inner,
        })
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

#[tokio::test]
async fn transient_failures_are_retried_up_to_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (failures, len, ok) in [(3, 100, true), (3, 300_000, true), (4, 100, false)] {
        let store = Arc::new(FailingWrites {
            inner: InMemory::new(),
            failures: AtomicU32::new(failures),
            permanent: false,
            on_multipart: None,
            stall_parts: None,
        });
        let up = Uploader::new(store.clone(), KeyPrefix::default(), small_parts());
        let bytes = data(len);
        let local = write_tmp(&dir, &format!("r{failures}-{len}"), &bytes);
        let res = up.upload_file(&local, &key(1)).await;
        if ok {
            let res = res.expect("succeeds after retries");
            assert_eq!(res.attempts, failures + 1);
            let got = store
                .get(&key(1).to_path(&KeyPrefix::default()))
                .await
                .expect("get");
            assert_eq!(got.bytes().await.expect("bytes").as_ref(), &bytes[..]);
        } else {
            let err = res.expect_err("gives up");
            assert!(
                matches!(err, Error::UploadFailed { attempts: 4, .. }),
                "{err}"
            );
            assert!(err.to_string().contains(&key(1).relative()), "{err}");
        }
    }
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FailingWrites {
        inner: InMemory::new(),
        failures: AtomicU32::new(1),
        permanent: true,
        on_multipart: None,
        stall_parts: None,
    });
    let up = Uploader::new(store, KeyPrefix::default(), small_parts());
    let local = write_tmp(&dir, "p", b"abc");
    let err = up.upload_file(&local, &key(1)).await.expect_err("denied");
    assert!(
        matches!(err, Error::UploadFailed { attempts: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_file_changed_between_the_two_reads_is_refused_and_aborted() {
    let dir = tempfile::tempdir().expect("tempdir");
    type Change = fn(&std::path::Path);
    let cases: [(&str, Change); 3] = [
        ("one byte flipped, same length", |p| {
            let mut b = std::fs::read(p).expect("read");
            b[200_000] ^= 0x01;
            std::fs::write(p, b).expect("write");
        }),
        ("appended", |p| {
            let mut b = std::fs::read(p).expect("read");
            b.extend_from_slice(b"more");
            std::fs::write(p, b).expect("write");
        }),
        ("truncated", |p| {
            let b = std::fs::read(p).expect("read");
            std::fs::write(p, &b[..b.len() - 1]).expect("write");
        }),
    ];
    for (i, (what, change)) in cases.into_iter().enumerate() {
        let local = write_tmp(&dir, &format!("c{i}"), &data(300_001));
        let target = local.clone();
        let store = Arc::new(FailingWrites {
            inner: InMemory::new(),
            failures: AtomicU32::new(0),
            permanent: false,
            on_multipart: Some(Box::new(move || change(&target))),
            stall_parts: None,
        });
        let up = Uploader::new(store.clone(), KeyPrefix::default(), small_parts());
        let err = up
            .upload_file(&local, &key(1))
            .await
            .expect_err("a changed file is refused");
        assert!(matches!(err, Error::FileChanged { .. }), "{what}: {err}");
        let get = store.get(&key(1).to_path(&KeyPrefix::default())).await;
        assert!(
            matches!(get, Err(object_store::Error::NotFound { .. })),
            "{what}: nothing is stored"
        );
    }
}

#[test]
fn part_buffers_return_to_the_pool_when_the_last_payload_reference_drops() {
    let pool = PartPool::new(2);
    let part = pool.take(16);
    let ptr = part.as_ref().as_ptr();
    let bytes = Bytes::from_owner(part);
    let store_copy = bytes.clone();
    drop(bytes);
    assert!(pool.free.lock().expect("pool").is_empty(), "still in use");
    drop(store_copy);
    assert_eq!(pool.free.lock().expect("pool").len(), 1);
    let again = pool.take(16);
    assert_eq!(again.as_ref().as_ptr(), ptr, "the same buffer is reused");
    assert_eq!(again.len(), 16);
    let many: Vec<PartBuf> = (0..4).map(|_| pool.take(8)).collect();
    drop(many);
    drop(again);
    assert_eq!(
        pool.free.lock().expect("pool").len(),
        2,
        "at most `keep` are kept"
    );
}

/// Pieces pushed into live uploads, each counted until the upload lets go of it (as the
/// capture's writer counts its lent chunks).
#[derive(Default, Clone)]
struct Pieces(Arc<AtomicU32>);

struct Counted {
    bytes: Vec<u8>,
    held: Arc<AtomicU32>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.held.fetch_sub(1, AtOrd::SeqCst);
    }
}

impl Pieces {
    fn piece(&self, bytes: &[u8]) -> Bytes {
        self.0.fetch_add(1, AtOrd::SeqCst);
        Bytes::from_owner(Counted {
            bytes: bytes.to_vec(),
            held: self.0.clone(),
        })
    }

    /// Pieces still held by some upload.
    fn held(&self) -> u32 {
        self.0.load(AtOrd::SeqCst)
    }

    /// Pushes `bytes` in uneven pieces, as the capture's writer does, pausing `pause` after
    /// each; stops at the first refusal and returns it.
    async fn feed(
        &self,
        live: &mut LiveUpload,
        bytes: &[u8],
        pause: Duration,
    ) -> std::result::Result<(), LiveStop> {
        for piece in bytes.chunks(9_999) {
            live.push(self.piece(piece))?;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(())
    }

    /// Waits (bounded) until no upload holds a piece.
    async fn all_back(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.held() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} pieces never given back",
                self.held()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn start_live(up: &Arc<Uploader>, seq: u64, meta: FileMeta) -> LiveUpload {
    up.live(&tokio::runtime::Handle::current(), &key(seq), meta)
}

/// An in-memory store and an uploader with small parts.
fn live_setup() -> (Arc<dyn ObjectStore>, Arc<Uploader>) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let up = Uploader::new(store.clone(), KeyPrefix::default(), small_parts());
    (store, Arc::new(up))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_uploads_store_exactly_the_bytes_written() {
    let (store, up) = live_setup();
    let start = key(0).start;
    let pieces = Pieces::default();
    // Empty, one part or less (a single PUT), exactly two parts, several parts; pushed at a
    // pace or all at once.
    for (seq, len, multipart, pause) in [
        (1, 0, false, 1),
        (2, 40 * 1024, false, 1),
        (3, 80 * 1024, true, 1),
        (4, 300_001, true, 1),
        (5, 300_001, true, 0),
    ] {
        let bytes = data(len);
        let opened = FileMeta {
            pods: vec!["team-a/web-0".into()],
            start: Some(start),
            ..FileMeta::default()
        };
        let mut live = start_live(&up, seq, opened.clone());
        pieces
            .feed(&mut live, &bytes, Duration::from_millis(pause))
            .await
            .expect("the upload goes on");
        assert_eq!(live.pushed(), len as u64);
        let path = key(seq).to_path(&KeyPrefix::default());
        if multipart && pause > 0 {
            // Parts are sent while writing, but the object appears only when complete.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(matches!(
                store.head(&path).await,
                Err(object_store::Error::NotFound { .. })
            ));
        }
        let closed = FileMeta {
            packets: Some(9),
            ..opened
        };
        let res = live
            .finish(bytes.len() as u64, closed)
            .wait()
            .await
            .expect("uploaded");
        assert_eq!((res.bytes, res.multipart), (len as u64, multipart), "{len}");
        assert_eq!(res.sha256, sha(&bytes));
        let got = store.get(&path).await.expect("stored");
        let (meta, declared) = FileMeta::from_attributes(&got.attributes);
        assert_eq!(meta.pods, vec!["team-a/web-0".to_string()], "{len}");
        if multipart {
            // Declared before the end: no SHA-256 or packet count.
            assert_eq!((declared, meta.packets), (None, None), "{len}");
            assert!(!res.attributes_stored);
        } else {
            assert_eq!(declared.as_deref(), Some(res.sha256.as_str()), "{len}");
            assert_eq!(meta.packets, Some(9));
            assert!(res.attributes_stored);
        }
        assert_eq!(got.bytes().await.expect("bytes").as_ref(), &bytes[..]);
    }
    // The in-memory store copies what it is given: every piece was let go.
    pieces.all_back().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_or_mismatched_live_upload_stores_nothing() {
    let (store, up) = live_setup();
    let pieces = Pieces::default();
    let bytes = data(200_000);
    let mut live = start_live(&up, 1, FileMeta::default());
    pieces
        .feed(&mut live, &bytes, Duration::from_millis(1))
        .await
        .expect("goes on");
    drop(live);
    // A length other than what was pushed (longer; shorter): refused.
    for (seq, wrong) in [(2, 200_001), (3, 50_000)] {
        let mut live = start_live(&up, seq, FileMeta::default());
        pieces
            .feed(&mut live, &bytes, Duration::from_millis(1))
            .await
            .expect("goes on");
        let err = live
            .finish(wrong, FileMeta::default())
            .wait()
            .await
            .expect_err("the file does not hold that many bytes");
        assert!(
            matches!(&err, Error::LiveStopped { reason, .. } if reason.contains("200000 bytes were pushed")),
            "{wrong}: {err}"
        );
    }
    pieces.all_back().await;
    for seq in [1, 2, 3] {
        let get = store.get(&key(seq).to_path(&KeyPrefix::default())).await;
        assert!(
            matches!(get, Err(object_store::Error::NotFound { .. })),
            "{seq}: nothing stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_fell_behind_sends_the_rest_from_the_closed_file() {
    let (store, up) = live_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let pieces = Pieces::default();
    let bytes = data(300_001);
    let part = small_parts().part_size;
    // Pushed before falling behind: nothing; part of a part; exactly two parts (the second
    // still pending); parts and a bit; everything.
    for (seq, pushed) in [
        (1, 0),
        (2, 10_000),
        (3, 2 * part),
        (4, 2 * part + 12_345),
        (5, bytes.len()),
    ] {
        let path = write_tmp(&dir, &format!("f{seq}.pcapng"), &bytes);
        let mut live = start_live(&up, seq, FileMeta::default());
        pieces
            .feed(&mut live, &bytes[..pushed], Duration::ZERO)
            .await
            .expect("goes on");
        // The file may be renamed once closed: the upload has it open already. Read directly
        // or, as when it was never written back, through the page cache.
        let cached = seq % 2 == 1;
        let done = live.finish_from_file(&path, bytes.len() as u64, FileMeta::default(), cached);
        std::fs::rename(&path, path.with_extension("closed")).expect("rename");
        let res = done.wait().await.expect("uploaded");
        assert_eq!(res.bytes, bytes.len() as u64, "{pushed}");
        assert!(res.multipart, "{pushed}");
        assert_eq!(res.sha256, sha(&bytes), "{pushed}");
        let got = store
            .get(&key(seq).to_path(&KeyPrefix::default()))
            .await
            .expect("stored");
        assert!(
            got.bytes().await.expect("bytes").as_ref() == &bytes[..],
            "{pushed}: the bytes, in order"
        );
    }
    // A file still carrying the padding of its last O_DIRECT block: only its length is sent.
    let mut padded = bytes.clone();
    padded.resize(bytes.len().next_multiple_of(4096), 0);
    let path = write_tmp(&dir, "padded.pcapng", &padded);
    let mut live = start_live(&up, 8, FileMeta::default());
    pieces
        .feed(&mut live, &bytes[..2 * part], Duration::ZERO)
        .await
        .expect("goes on");
    let res = live
        .finish_from_file(&path, bytes.len() as u64, FileMeta::default(), false)
        .wait()
        .await
        .expect("uploaded");
    assert_eq!(res.sha256, sha(&bytes));
    let got = store
        .get(&key(8).to_path(&KeyPrefix::default()))
        .await
        .expect("stored");
    assert_eq!(got.bytes().await.expect("bytes").len(), bytes.len());
    // A file shorter than its length, and one that cannot be opened: refused, nothing stored.
    let short = write_tmp(&dir, "short.pcapng", &bytes[..200_000]);
    let mut live = start_live(&up, 6, FileMeta::default());
    pieces
        .feed(&mut live, &bytes[..100_000], Duration::ZERO)
        .await
        .expect("goes on");
    let err = live
        .finish_from_file(&short, bytes.len() as u64, FileMeta::default(), false)
        .wait()
        .await
        .expect_err("the file is shorter");
    assert!(
        err.to_string().contains("the file holds 200000 bytes"),
        "{err}"
    );
    let mut live = start_live(&up, 7, FileMeta::default());
    pieces
        .feed(&mut live, &bytes[..100_000], Duration::ZERO)
        .await
        .expect("goes on");
    let err = live
        .finish_from_file(
            &dir.path().join("gone.pcapng"),
            bytes.len() as u64,
            FileMeta::default(),
            false,
        )
        .wait()
        .await
        .expect_err("no such file");
    assert!(err.to_string().contains("gone.pcapng"), "{err}");
    pieces.all_back().await;
    for seq in [6, 7] {
        let get = store.get(&key(seq).to_path(&KeyPrefix::default())).await;
        assert!(
            matches!(get, Err(object_store::Error::NotFound { .. })),
            "{seq}: nothing stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_live_upload_reports_the_store_error() {
    let store = Arc::new(FailingWrites {
        inner: InMemory::new(),
        failures: AtomicU32::new(1),
        permanent: true,
        on_multipart: None,
        stall_parts: None,
    });
    let up = Arc::new(Uploader::new(store, KeyPrefix::default(), small_parts()));
    let pieces = Pieces::default();
    let mut live = start_live(&up, 1, FileMeta::default());
    // The refusal reaches the writer while it pushes (it then stops) or at the end.
    let bytes = data(200_000);
    let stopped = pieces
        .feed(&mut live, &bytes, Duration::from_millis(2))
        .await;
    assert_eq!(
        stopped,
        Err(LiveStop::Failed),
        "the failure reaches the writer"
    );
    let pushed = live.pushed();
    let err = live
        .finish(pushed, FileMeta::default())
        .wait()
        .await
        .expect_err("refused");
    assert!(matches!(err, Error::UploadFailed { .. }), "{err}");
    pieces.all_back().await;
}

/// A multipart upload whose parts wait until `open` reads true, counting the parts started.
#[derive(Debug)]
struct StalledUpload {
    inner: Box<dyn MultipartUpload>,
    open: tokio::sync::watch::Receiver<bool>,
    started: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl MultipartUpload for StalledUpload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        self.started.fetch_add(1, AtOrd::SeqCst);
        let part = self.inner.put_part(data.clone());
        let mut open = self.open.clone();
        Box::pin(async move {
            let _ = open.wait_for(|o| *o).await;
            // The payload is held until the store has it, as a network store does.
            drop(data);
            part.await
        })
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_never_holds_up_the_writer_and_a_dropped_upload_lets_go_at_once() {
    let (open, stall) = tokio::sync::watch::channel(false);
    let started = Arc::new(AtomicU32::new(0));
    let store = Arc::new(FailingWrites {
        inner: InMemory::new(),
        failures: AtomicU32::new(0),
        permanent: false,
        on_multipart: None,
        stall_parts: Some((stall, started.clone())),
    });
    let opts = small_parts();
    let part = opts.part_size;
    let up = Arc::new(Uploader::new(store.clone(), KeyPrefix::default(), opts));
    let pieces = Pieces::default();
    // Eight parts' worth while the store answers nothing: every push returns at once, and the
    // upload holds every piece (the writer sees that and decides when it is too far behind).
    let bytes = data(part * 8 + 1);
    let mut live = start_live(&up, 1, FileMeta::default());
    pieces
        .feed(&mut live, &bytes, Duration::ZERO)
        .await
        .expect("goes on");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A part (of whole pieces) goes when the piece after it arrives.
    let pieces_n = bytes.len().div_ceil(9_999);
    let sent = (pieces_n - 1) / part.div_ceil(9_999);
    assert_eq!(
        started.load(AtOrd::SeqCst) as usize,
        sent,
        "each part is sent at once"
    );
    assert_eq!(pieces.held() as usize, bytes.len().div_ceil(9_999));
    // Dropped: the parts travelling and waiting go back at once, though the store still
    // answers nothing, and nothing is stored.
    drop(live);
    pieces.all_back().await;
    // Once the store answers again, a new upload goes through.
    open.send_replace(true);
    let mut live = start_live(&up, 2, FileMeta::default());
    pieces
        .feed(&mut live, &bytes, Duration::ZERO)
        .await
        .expect("goes on");
    let res = live
        .finish(bytes.len() as u64, FileMeta::default())
        .wait()
        .await
        .expect("uploaded");
    assert_eq!(res.bytes, bytes.len() as u64);
    assert_eq!(res.sha256, sha(&bytes));
    pieces.all_back().await;
    let get = store.get(&key(1).to_path(&KeyPrefix::default())).await;
    assert!(matches!(get, Err(object_store::Error::NotFound { .. })));
}

#[test]
fn files_beyond_ten_thousand_parts_get_bigger_parts() {
    let up = Uploader::new(
        Arc::new(InMemory::new()),
        KeyPrefix::default(),
        UploadOptions {
            part_size: 5 << 20,
            ..UploadOptions::default()
        },
    );
    assert_eq!(up.part_size_for(1 << 30), 5 << 20);
    assert_eq!(up.part_size_for(10_000 * (5 << 20)), 5 << 20);
    // 100 GiB in 10 000 parts: 10.7 MB each, rounded up to 11 MiB.
    assert_eq!(up.part_size_for(100 << 30), 11 << 20);
    assert!((100u64 << 30).div_ceil(11 << 20) <= MAX_PARTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_upload_stops_before_ten_thousand_parts() {
    let up = Arc::new(Uploader::new(
        Arc::new(InMemory::new()),
        KeyPrefix::default(),
        UploadOptions {
            part_size: 1,
            ..UploadOptions::default()
        },
    ));
    let pieces = Pieces::default();
    let mut live = start_live(&up, 1, FileMeta::default());
    // 9 999 one-byte parts go and the 10 000th waits to be the last; one more byte is refused.
    for i in 0..10_001u32 {
        match live.push(pieces.piece(&[i as u8])) {
            Ok(()) => assert!(i < 10_000, "byte {i} accepted"),
            Err(e) => {
                assert_eq!((i, e), (10_000, LiveStop::TooLarge));
                break;
            }
        }
    }
    drop(live);
    pieces.all_back().await;
}

fn ino(p: &FsPath) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).expect("metadata").ino()
}

/// Names in `dir` and below, relative to it.
fn tree(dir: &FsPath) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            if e.file_type().expect("file type").is_dir() {
                todo.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).expect("below").to_path_buf();
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_local_store_on_the_same_file_system_links_files_instead_of_copying() {
    let spool = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(root.path()).expect("local fs"));
    let prefix = KeyPrefix::new("caps").expect("prefix");
    let up = Uploader::new(store.clone(), prefix.clone(), small_parts())
        .link_into(root.path())
        .expect("link target");
    assert!(up.links_from(spool.path()));
    // With sums from the writer, without (a leftover: hashed here), small and multipart-sized,
    // and a key that is already there (a re-upload after a crash): replaced.
    for (seq, len, known) in [
        (1, 5000, true),
        (2, 300_001, true),
        (3, 70_000, false),
        (1, 9, true),
    ] {
        let bytes = data(len);
        let local = write_tmp(&spool, &format!("f{seq}-{len}"), &bytes);
        let inode = ino(&local);
        let sums = known.then(|| sums_of(&bytes));
        let res = up
            .upload_file_with_sums(&local, &key(seq), &FileMeta::default(), sums.as_ref())
            .await
            .expect("publish");
        assert!(res.linked, "len {len}");
        assert!(!res.multipart && !res.attributes_stored);
        assert_eq!(
            (res.bytes, res.sha256.as_str()),
            (len as u64, sha(&bytes).as_str())
        );
        let path = key(seq).to_path(&prefix);
        assert_eq!(res.key, path.to_string());
        let object = root.path().join(path.as_ref());
        assert_eq!(ino(&object), inode, "the object is the spool file itself");
        let got = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(got.as_ref(), bytes.as_slice());
    }
    // No staging names left behind; the store lists exactly the three objects.
    let mut want: Vec<String> = [1, 2, 3]
        .iter()
        .map(|s| key(*s).to_path(&prefix).to_string())
        .collect();
    want.sort();
    assert_eq!(tree(root.path()), want);
    let listed: Vec<_> = store
        .list(None)
        .map(|m| m.expect("list").location.to_string())
        .collect::<Vec<_>>()
        .await;
    assert_eq!(listed.len(), 3);
    // A run that stopped after publishing but before removing its spool name: the leftover is
    // the object itself; publishing it again leaves it as it is.
    let leftover = spool.path().join("f2-300001");
    let again = up
        .upload_file(&leftover, &key(2))
        .await
        .expect("publish again");
    assert!(again.linked);
    assert_eq!(again.sha256, sha(&data(300_001)));
    assert_eq!(tree(root.path()), want);
    // A file whose length differs from its sums is refused and nothing is published.
    let bytes = data(4000);
    let local = write_tmp(&spool, "changed", &bytes);
    let err = up
        .upload_file_with_sums(
            &local,
            &key(9),
            &FileMeta::default(),
            Some(&sums_of(&bytes[..10])),
        )
        .await
        .expect_err("changed file refused");
    assert!(matches!(err, Error::FileChanged { .. }), "{err}");
    assert!(!root.path().join(key(9).to_path(&prefix).as_ref()).exists());
}

#[tokio::test]
async fn a_local_store_on_another_file_system_gets_a_copy() {
    // The spool on tmpfs, the store on the test's disk: linking is impossible, so it copies.
    let spool = tempfile::tempdir_in("/dev/shm").expect("tempdir on tmpfs /dev/shm");
    let root = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(root.path()).expect("local fs"));
    let up = Uploader::new(store.clone(), KeyPrefix::default(), small_parts())
        .link_into(root.path())
        .expect("link target");
    assert!(!up.links_from(spool.path()));
    let bytes = data(200_000);
    let local = write_tmp(&spool, "f", &bytes);
    let res = up.upload_file(&local, &key(1)).await.expect("upload");
    assert!(!res.linked && res.multipart);
    let object = root.path().join(key(1).relative());
    assert_ne!(ino(&object), ino(&local));
    assert_eq!(std::fs::read(&object).expect("object"), bytes);
    // Uploaders that were not asked to link never do.
    let plain = Uploader::new(store, KeyPrefix::default(), small_parts());
    assert!(!plain.links_from(root.path()));
}
