use std::io::{Cursor, Read};

use chrono::TimeZone;
use object_store::{ObjectStoreExt, PutPayload, memory::InMemory};

use super::*;

fn when() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 3, 4, 6)
        .single()
        .expect("valid")
}

async fn build(force_zip64: bool, sizes: &[usize]) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    build_on(Arc::new(InMemory::new()), force_zip64, sizes).await
}

async fn build_on(
    store: Arc<dyn ObjectStore>,
    force_zip64: bool,
    sizes: &[usize],
) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let manifest = Bytes::from_static(b"{\"files\":[]}");
    let mut entries = vec![ArchiveEntry {
        name: "manifest.json".into(),
        location: None,
        inline: manifest.clone(),
        size: manifest.len() as u64,
        modified: when(),
    }];
    let mut expected = vec![("manifest.json".to_string(), manifest.to_vec())];
    for (i, &len) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        let path = Path::from(format!("ns/cap/node-{i}/f.pcapng"));
        store
            .put(&path, PutPayload::from(data.clone()))
            .await
            .expect("put");
        let name = format!("node-{i}/f.pcapng");
        entries.push(ArchiveEntry {
            name: name.clone(),
            location: Some(path),
            inline: Bytes::new(),
            size: len as u64,
            modified: when(),
        });
        expected.push((name, data));
    }
    let opts = ZipOptions {
        force_zip64,
        // Small ranges so that entries span several ranges.
        range_bytes: 64 * 1024,
        ..ZipOptions::default()
    };
    let chunks: Vec<Bytes> = zip_stream_with(store, entries, opts)
        .map(|c| c.expect("chunk"))
        .collect()
        .await;
    (chunks.concat(), expected)
}

fn check_with_zip_crate(zip_bytes: &[u8], expected: &[(String, Vec<u8>)]) {
    let mut z = zip::ZipArchive::new(Cursor::new(zip_bytes)).expect("zip crate opens the archive");
    assert_eq!(z.len(), expected.len());
    for (i, (name, data)) in expected.iter().enumerate() {
        let mut f = z.by_index(i).expect("entry");
        assert_eq!(f.name().expect("utf-8 name"), name.as_str());
        assert_eq!(f.size(), data.len() as u64);
        let mut got = Vec::new();
        f.read_to_end(&mut got)
            .expect("read entry (checks the CRC)");
        assert_eq!(&got, data, "{name}");
        let t = f.last_modified().expect("timestamp");
        assert_eq!(
            (
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            (2026, 11, 22, 3, 4, 6)
        );
    }
}

/// Python's zipfile is an independent reader; `-t` checks every CRC.
fn check_with_python(zip_bytes: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("a.zip");
    std::fs::write(&p, zip_bytes).expect("write");
    match std::process::Command::new("python3")
        .args(["-m", "zipfile", "-t"])
        .arg(&p)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "python zipfile -t: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("SKIP python cross-check: python3 not runnable: {e}"),
    }
}

#[tokio::test]
async fn stored_entries_read_back_identically() {
    let (z, expected) = build(false, &[0, 1, 70_000, 1 << 20]).await;
    check_with_zip_crate(&z, &expected);
    check_with_python(&z);
}

/// The local file system streams objects in small chunks: exercises coalescing.
#[tokio::test]
async fn chunked_reads_are_coalesced_without_changing_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local fs");
    let (z, expected) = build_on(Arc::new(fs), false, &[3 << 20, 300_001, 7]).await;
    check_with_zip_crate(&z, &expected);
    check_with_python(&z);
}

#[tokio::test]
async fn zip64_records_read_back_identically() {
    let (z, expected) = build(true, &[5, 300_000]).await;
    check_with_zip_crate(&z, &expected);
    check_with_python(&z);
}

#[tokio::test]
async fn empty_archive_is_valid() {
    let (z, expected) = build(false, &[]).await;
    check_with_zip_crate(&z, &expected);
}

#[tokio::test]
async fn missing_object_ends_the_stream_with_an_error() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let entries = vec![ArchiveEntry {
        name: "gone.pcapng".into(),
        location: Some(Path::from("ns/gone.pcapng")),
        inline: Bytes::new(),
        size: 10,
        modified: when(),
    }];
    let items: Vec<_> = zip_stream(store, entries).collect().await;
    let err = items
        .last()
        .expect("some item")
        .as_ref()
        .expect_err("last item is the error");
    assert!(err.to_string().contains("ns/gone.pcapng"), "{err}");
}

#[test]
fn dos_times() {
    assert_eq!(
        dos_time(when()),
        ((3 << 11) | (4 << 5) | 3, (46 << 9) | (11 << 5) | 22)
    );
    let old = Utc
        .with_ymd_and_hms(1970, 1, 1, 0, 0, 0)
        .single()
        .expect("valid");
    assert_eq!(dos_time(old), (0, (1 << 5) | 1));
}
