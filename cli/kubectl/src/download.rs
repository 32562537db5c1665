//! `download`: a capture's files through the gateway into `DIR/NODE/FILE`, each checked against
//! its recorded SHA-256. Files already present and intact are skipped; a `.partial` left by an
//! interrupted run is resumed with a ranged GET.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use crate::{
    error::{Error, Result},
    gateway::{Gateway, RemoteFile},
};

const BUFFER: usize = 1 << 20;

/// What a download did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Every file of the capture, on disk now.
    pub paths: Vec<PathBuf>,
    /// Files fetched (fully or the rest of a partial one).
    pub fetched: usize,
    /// Files already present and intact.
    pub skipped: usize,
    /// Fetched files that continued a `.partial` left by an interrupted run.
    pub resumed: usize,
    /// Bytes transferred.
    pub bytes: u64,
}

/// Where a file goes: `DIR/NODE/FILE`.
pub fn local_path(dir: &Path, f: &RemoteFile) -> PathBuf {
    let file = f.key.rsplit('/').next().unwrap_or(&f.key);
    dir.join(&f.node).join(file)
}

/// Downloads every file of `ns/name` into `dir`, `parallel` at a time.
pub async fn download(
    gw: &Gateway,
    ns: &str,
    name: &str,
    dir: &Path,
    parallel: usize,
) -> Result<Summary> {
    let files = gw.files(ns, name, "1h").await?;
    let mut todo = Vec::new();
    let mut summary = Summary::default();
    for f in &files {
        let path = local_path(dir, f);
        summary.paths.push(path.clone());
        if intact(&path, f).await? {
            summary.skipped += 1;
        } else {
            todo.push((f.clone(), path));
        }
    }
    let total: u64 = todo.iter().map(|(f, _)| f.bytes).sum();
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} ({eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let count = todo.len();
    bar.set_message(format!("0/{count} files"));
    let finished = AtomicUsize::new(0);
    let results: Vec<(u64, bool)> = futures::stream::iter(todo.into_iter().map(|(f, path)| {
        let bar = bar.clone();
        async move { fetch(gw, &f, &path, &bar).await }
    }))
    .buffer_unordered(parallel.max(1))
    .inspect(|_| {
        let done = finished.fetch_add(1, Ordering::Relaxed) + 1;
        bar.set_message(format!("{done}/{count} files"));
    })
    .try_collect()
    .await?;
    bar.finish_and_clear();
    summary.fetched = results.len();
    summary.bytes = results.iter().map(|(b, _)| b).sum();
    summary.resumed = results.iter().filter(|(_, r)| *r).count();
    Ok(summary)
}

/// Whether `path` holds exactly the file the gateway lists.
async fn intact(path: &Path, f: &RemoteFile) -> Result<bool> {
    match tokio::fs::metadata(path).await {
        Ok(m) if m.len() == f.bytes => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(path, e)),
    }
    let Some(want) = &f.sha256 else {
        return Ok(true);
    };
    let (hasher, _) = hash_file(path).await?;
    Ok(hex::encode(hasher.finalize()) == *want)
}

async fn hash_file(path: &Path) -> Result<(Sha256, u64)> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUFFER];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok((hasher, len));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// Fetches one file into `path.partial` (resuming it), checks it, renames it into place.
/// Returns the bytes transferred and whether a partial file was resumed.
async fn fetch(
    gw: &Gateway,
    f: &RemoteFile,
    path: &Path,
    bar: &ProgressBar,
) -> Result<(u64, bool)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(dir, e))?;
    let partial = path.with_extension("pcapng.partial");
    let (mut hasher, mut have) = match tokio::fs::metadata(&partial).await {
        Ok(m) if m.len() <= f.bytes => hash_file(&partial).await?,
        _ => (Sha256::new(), 0),
    };
    let mut req = gw.http().get(&f.url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Error::transport(format!("downloading {}", f.key), e))?;
    let code = resp.status().as_u16();
    if !(200..300).contains(&code) {
        let body = resp.bytes().await.unwrap_or_default();
        return Err(crate::error::from_response(code, &body));
    }
    let resumed = code == 206;
    let mut file = if resumed {
        bar.inc(have);
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(&partial)
            .await
    } else {
        (hasher, have) = (Sha256::new(), 0);
        tokio::fs::File::create(&partial).await
    }
    .map_err(|e| Error::io(&partial, e))?;
    let mut out = BufWriter::with_capacity(BUFFER, &mut file);
    let mut body = resp.bytes_stream();
    let mut sent = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::transport(format!("downloading {}", f.key), e))?;
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| Error::io(&partial, e))?;
        sent += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    out.flush().await.map_err(|e| Error::io(&partial, e))?;
    drop(out);
    file.sync_all().await.map_err(|e| Error::io(&partial, e))?;
    let got = hex::encode(hasher.finalize());
    let len = have + sent;
    if let Some(want) = &f.sha256
        && *want != got
    {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            got,
            want: want.clone(),
        });
    }
    if len != f.bytes {
        return Err(Error::Config(format!(
            "{}: got {len} bytes, the gateway lists {}; run download again",
            path.display(),
            f.bytes
        )));
    }
    tokio::fs::rename(&partial, path)
        .await
        .map_err(|e| Error::io(path, e))?;
    Ok((sent, resumed))
}

/// The commands that open the downloaded files.
pub fn open_hint(dir: &Path, name: &str, paths: &[PathBuf]) -> String {
    match paths {
        [] => "No files yet.".into(),
        [one] => format!(
            "Open it with:\n  tshark -r {0}\n  wireshark -r {0}",
            one.display()
        ),
        many => {
            let merged = dir.join(format!("{name}.pcapng"));
            let list: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
            format!(
                "Open them with:\n  mergecap -w {0} {1}\n  tshark -r {0}\n  wireshark -r {0}",
                merged.display(),
                list.join(" ")
            )
        }
    }
}
