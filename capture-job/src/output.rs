//! Where a capture's results go: the store (opened, checked when it is a local directory, with
//! its uploader) and the summary line on stdout. Used by every mode.

use std::sync::Arc;

use nightcap_storage::{Store, StoreConfig, UploadOptions, Uploader};

use crate::{Error, Result, Summary};

/// Opens the store. A local directory is checked with a put and a delete (an S3 store may be
/// down at start: the spool covers that) and gets closed files by hard link where the spool is
/// on the same file system (no copy); everything else gets them uploaded.
pub(crate) async fn open(
    output: &str,
    config: &StoreConfig,
    options: UploadOptions,
) -> Result<(Store, Arc<Uploader>)> {
    let opened = config.open()?;
    let uploader = Uploader::new(opened.store.clone(), opened.prefix.clone(), options);
    let uploader = match config {
        StoreConfig::Local(c) => {
            nightcap_storage::probe(opened.store.as_ref(), &opened.prefix)
                .await
                .map_err(|e| Error::Invalid(format!("cannot write to {output}: {e}")))?;
            uploader.link_into(&c.path)?
        }
        _ => uploader,
    };
    Ok((opened, Arc::new(uploader)))
}

/// Prints the summary as one JSON line; fails when files remain in the spool, saying how they
/// get uploaded (`then`).
pub(crate) fn finish(summary: &Summary, then: &str) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string(summary).map_err(|e| Error::Invalid(e.to_string()))?
    );
    if !summary.spool_left.is_empty() {
        return Err(Error::Invalid(format!(
            "{} file(s) could not be uploaded and remain in the spool; {then}",
            summary.spool_left.len()
        )));
    }
    Ok(())
}
