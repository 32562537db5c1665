//! The write check a capture makes before it captures: put and delete one small object.

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::{Error, KeyPrefix, Result};

/// Checks `store` accepts writes and deletes under `prefix`: puts a small object named after
/// this process (`{prefix}/.nightcap-write-test-{pid}`) and deletes it. One attempt each, so a
/// store that refuses fails at once; call it before anything is captured.
pub async fn probe(store: &dyn ObjectStore, prefix: &KeyPrefix) -> Result<()> {
    let path = prefix
        .path()
        .join(format!(".nightcap-write-test-{}", std::process::id()));
    store
        .put(&path, PutPayload::from_static(b"nightcap"))
        .await
        .map_err(|source| Error::UploadFailed {
            key: path.to_string(),
            attempts: 1,
            source,
        })?;
    store
        .delete(&path)
        .await
        .map_err(|source| Error::DeleteFailed {
            key: path.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use object_store::{local::LocalFileSystem, memory::InMemory};

    use super::*;

    #[tokio::test]
    async fn a_writable_store_passes_and_keeps_nothing() {
        let store = InMemory::new();
        let prefix = KeyPrefix::new("captures/prod").expect("prefix");
        probe(&store, &prefix).await.expect("writable");
        let left = futures::TryStreamExt::try_collect::<Vec<_>>(store.list(None))
            .await
            .expect("list");
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn an_unwritable_store_fails_with_the_key() {
        // sysfs refuses new files, even for root.
        let store = LocalFileSystem::new_with_prefix("/sys/kernel").expect("store");
        let prefix = KeyPrefix::new("").expect("prefix");
        let err = probe(&store, &prefix).await.expect_err("unwritable");
        assert!(
            matches!(&err, Error::UploadFailed { key, .. } if key.starts_with(".nightcap-write-test-")),
            "{err}"
        );
    }
}
