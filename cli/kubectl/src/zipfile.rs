//! `download --zip`: one files.zip from the gateway, then every entry checked against the
//! SHA-256 its `manifest.json` records.

use std::{
    io::{IsTerminal, Read},
    path::{Path, PathBuf},
};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::{
    error::{Error, Result},
    gateway::Gateway,
};

#[derive(Debug, Deserialize)]
struct Manifest {
    files: Vec<ManifestFile>,
}

#[derive(Debug, Deserialize)]
struct ManifestFile {
    path: String,
    #[serde(default)]
    sha256: Option<String>,
}

/// Downloads `DIR/NAME.zip` and checks it; returns its path and the number of capture files.
pub async fn download_zip(
    gw: &Gateway,
    ns: &str,
    name: &str,
    dir: &Path,
) -> Result<(PathBuf, usize)> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(dir, e))?;
    let path = dir.join(format!("{name}.zip"));
    let partial = dir.join(format!("{name}.zip.partial"));
    let resp = gw.zip(ns, name).await?;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec} files.zip")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| Error::io(&partial, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, &mut file);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::transport("downloading files.zip", e))?;
        out.write_all(&chunk)
            .await
            .map_err(|e| Error::io(&partial, e))?;
        bar.inc(chunk.len() as u64);
    }
    out.flush().await.map_err(|e| Error::io(&partial, e))?;
    drop(out);
    file.sync_all().await.map_err(|e| Error::io(&partial, e))?;
    bar.finish_and_clear();
    let check = partial.clone();
    let entries = tokio::task::spawn_blocking(move || verify(&check))
        .await
        .map_err(|e| Error::Config(format!("checking files.zip: {e}")))??;
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(|e| Error::io(&path, e))?;
    Ok((path, entries))
}

/// Checks every entry the manifest lists; returns how many.
fn verify(path: &Path) -> Result<usize> {
    let bad = |why: String| Error::Config(format!("{}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let manifest: Manifest = {
        let entry = zip
            .by_name("manifest.json")
            .map_err(|e| bad(format!("manifest.json: {e}")))?;
        serde_json::from_reader(entry).map_err(|e| bad(format!("manifest.json: {e}")))?
    };
    let mut buf = vec![0u8; 1 << 20];
    for f in &manifest.files {
        let mut entry = zip
            .by_name(&f.path)
            .map_err(|e| bad(format!("{}: {e}", f.path)))?;
        let mut hasher = Sha256::new();
        loop {
            let n = entry.read(&mut buf).map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let got = hex::encode(hasher.finalize());
        if let Some(want) = &f.sha256
            && *want != got
        {
            return Err(Error::Checksum {
                path: path.join(&f.path),
                got,
                want: want.clone(),
            });
        }
    }
    Ok(manifest.files.len())
}
