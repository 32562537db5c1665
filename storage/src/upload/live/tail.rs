//! The rest of a file whose live upload fell behind: read from the spool file part by part,
//! hashed and sent after the parts already stored.

use bytes::Bytes;
use futures::StreamExt;

use super::task::{LiveSums, Sending, Tail, Task, joined};
use crate::{
    error::{Error, Result},
    upload::UploadedFile,
};

impl Task {
    /// Sends `rest` and the file's bytes after them (read from `tail`) as the remaining parts,
    /// at most `max_concurrent_parts` at once, and completes. Anything started is aborted on an
    /// error.
    pub(super) async fn complete_from_file(
        &self,
        sending: Option<Sending>,
        sums: LiveSums,
        rest: Vec<Bytes>,
        tail: Tail,
        len: u64,
    ) -> Result<UploadedFile> {
        let mut s = match sending {
            Some(s) => s,
            None => self.start().await?,
        };
        let sha256 = match self.send_tail(&mut s, sums, rest, tail, len).await {
            Ok(sha256) => sha256,
            Err(e) => {
                s.abort(&self.path).await;
                return Err(e);
            }
        };
        // Every part is stored already (send_tail waited for them).
        self.complete_parts(
            s,
            len,
            sha256,
            "Uploaded while written (the rest read from the spool file).",
        )
        .await
    }

    /// The part loop of [`Task::complete_from_file`]; returns the file's SHA-256 once every part
    /// is stored.
    async fn send_tail(
        &self,
        s: &mut Sending,
        mut sums: LiveSums,
        mut first: Vec<Bytes>,
        tail: Tail,
        len: u64,
    ) -> Result<String> {
        // Only the file's `len` bytes are read: an O_DIRECT file may still carry the padding of
        // its last block.
        let mut remaining = len.saturating_sub(tail.from);
        let mut file = tail.file;
        let part_size = self.up.options.part_size.max(1);
        let parallel = self.up.options.max_concurrent_parts.max(1);
        let read_err = |e: std::io::Error| Error::LiveStopped {
            key: self.path.to_string(),
            reason: format!("reading the rest of the file: {e}"),
        };
        loop {
            while s.in_flight.len() >= parallel {
                if let Some(done) = s.in_flight.next().await {
                    joined(done).map_err(|e| self.store_err(e))?;
                }
            }
            // The pieces pushed before the upload fell behind start the first part.
            let have: usize = first.iter().map(Bytes::len).sum();
            let want = part_size
                .saturating_sub(have)
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            // The last read asks for whole blocks, so a direct read of the end of the file is
            // not refused (any padding read is cut off).
            let size = if want as u64 == remaining {
                want.next_multiple_of(nightcap_sys::ALIGN)
            } else {
                want
            };
            let mut buf = self.up.parts.take(size);
            let read = tokio::task::spawn_blocking(move || {
                let n = file.read_full(buf.full())?;
                buf.set_len(n.min(want));
                for piece in &first {
                    sums.update(piece);
                }
                sums.update(buf.as_ref());
                Ok::<_, std::io::Error>((file, sums, first, buf))
            })
            .await
            .map_err(|e| read_err(std::io::Error::other(e)))?
            .map_err(read_err)?;
            let buf;
            (file, sums, first, buf) = read;
            remaining -= buf.len() as u64;
            // The end of the file, or of what it should hold (then the length check fails).
            let last = remaining == 0 || buf.len() < want;
            let mut part = std::mem::take(&mut first);
            if !buf.is_empty() {
                part.push(Bytes::from_owner(buf));
            }
            if !part.is_empty() {
                s.put(part);
            }
            if last {
                break;
            }
        }
        while let Some(done) = s.in_flight.next().await {
            joined(done).map_err(|e| self.store_err(e))?;
        }
        let sums = sums.finish();
        if sums.len != len {
            return Err(Error::LiveStopped {
                key: self.path.to_string(),
                reason: format!("the file holds {} bytes, {len} were written", sums.len),
            });
        }
        Ok(sums.sha256)
    }
}
