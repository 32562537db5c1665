//! [`S3Server`]: a real S3 endpoint (s3s-fs 0.14.1 over a temp directory) with SigV4
//! authentication, served in-process on 127.0.0.1.
//!
//! s3s verifies every signature (headers and pre-signed query strings, including expiry) against
//! one access/secret key pair, and denies unsigned requests, so tampered or expired URLs get a
//! real 403 from the server. The server runs on its own thread with its own tokio runtime, so it
//! works from plain `#[test]`s and from any async runtime; it stops on drop.
//!
//! Buckets are directories under [`S3Server::root_dir`] (that is how s3s-fs stores them).
//!
//! Object bodies are read in 1 MiB chunks on a blocking thread instead of s3s-fs's 4 KiB
//! `tokio::fs` reads (one blocking-pool round trip per 4 KiB capped GETs near 100 MB/s, slower
//! than the code under test); every other operation, and every header of GetObject, is s3s-fs's.

use crate::error::{Error, Result};
use hyper_util::rt::TokioIo;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use s3s::{
    S3, S3Request, S3Response, S3Result,
    auth::SimpleAuth,
    dto::{self, StreamingBlob},
    service::S3ServiceBuilder,
};
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    thread::JoinHandle,
};
use tokio::sync::oneshot;

/// Region the server reports and clients sign for.
pub const REGION: &str = "us-east-1";
/// Bucket created by [`S3Server::start`].
pub const DEFAULT_BUCKET: &str = "nightcap-test";

/// A running in-process S3 server with one bucket; stops on drop.
#[derive(Debug)]
pub struct S3Server {
    addr: SocketAddr,
    bucket: String,
    access_key: String,
    secret_key: String,
    root: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl S3Server {
    /// Starts a server with bucket [`DEFAULT_BUCKET`] and fresh random credentials. Panics with
    /// the reason when it cannot.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("S3Server::start: {e}"))
    }

    /// Like [`start`](Self::start), returning the error.
    pub fn try_start() -> Result<Self> {
        Self::try_start_in(&std::env::temp_dir())
    }

    /// Like [`try_start`](Self::try_start), keeping the buckets in a new directory under
    /// `base` (e.g. `/dev/shm`, so that storing objects costs no disk I/O).
    pub fn try_start_in(base: &Path) -> Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("nightcap-s3-")
            .tempdir_in(base)
            .map_err(|source| Error::TempDir {
                base: base.to_path_buf(),
                source,
            })?;
        let access_key = format!("AKNC{:016X}", rand::random::<u64>());
        let secret_key = format!(
            "{:032x}{:08x}",
            rand::random::<u128>(),
            rand::random::<u32>()
        );

        let fs = s3s_fs::FileSystem::new(root.path())
            .map_err(|e| Error::S3(format!("opening root {}: {e:?}", root.path().display())))?;
        let mut builder = S3ServiceBuilder::new(FastBodies {
            inner: fs,
            root: root.path().to_path_buf(),
        });
        builder.set_auth(SimpleAuth::from_single(
            access_key.clone(),
            secret_key.clone(),
        ));
        let service = builder.build();

        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("binding the S3 server to 127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the S3 server address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("making the S3 listener non-blocking", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("building the S3 server's tokio runtime", e))?;
        let (shutdown, stop) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("s3-server-{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, service, stop)))
            .map_err(|e| Error::io("spawning the S3 server thread", e))?;

        let server = Self {
            addr,
            bucket: DEFAULT_BUCKET.to_owned(),
            access_key,
            secret_key,
            root,
            shutdown: Some(shutdown),
            thread: Some(thread),
        };
        server.create_bucket(DEFAULT_BUCKET)?;
        Ok(server)
    }

    /// Creates another (empty) bucket.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let valid = (3..=63).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "bucket name {name:?} must be 3-63 characters of [a-z0-9.-]"
            )));
        }
        let dir = self.root.path().join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| Error::io(format!("creating bucket directory {}", dir.display()), e))
    }

    /// Endpoint URL, `http://127.0.0.1:PORT` (path-style requests).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Region to sign for ([`REGION`]).
    pub fn region(&self) -> &str {
        REGION
    }

    /// The bucket created at start ([`DEFAULT_BUCKET`]).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The only access key the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key for [`access_key`](Self::access_key).
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Directory holding the buckets (one subdirectory each); deleted on drop.
    pub fn root_dir(&self) -> &Path {
        self.root.path()
    }

    /// Directory of [`bucket`](Self::bucket): objects appear here as files named by their key.
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.path().join(&self.bucket)
    }

    /// The `AWS_*` variables that point nightcap's command-line tools (and any S3 client that
    /// reads them) at this server: endpoint, credentials, region, plain HTTP.
    pub fn client_env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// An object_store S3 builder preconfigured for this server and bucket (endpoint, region,
    /// credentials, path-style, plain HTTP); change what you need and `build()` it.
    pub fn object_store_builder(&self) -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_region(REGION)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
    }

    /// An object_store client for this server's bucket.
    pub fn object_store(&self) -> Result<AmazonS3> {
        Ok(self.object_store_builder().build()?)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("nightcap-testsupport: the S3 server thread panicked");
        }
    }
}

/// Accepts connections until `stop` fires; dropping the runtime afterwards aborts open ones.
async fn serve(
    listener: std::net::TcpListener,
    service: s3s::service::S3Service,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("nightcap-testsupport: S3 server cannot use its listener: {e}");
            return;
        }
    };
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("nightcap-testsupport: S3 server accept failed: {e}");
                    continue;
                }
            },
        };
        let service = service.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // A client hanging up mid-request is not the server's problem.
            let _ = connection.await;
        });
    }
}

/// s3s-fs with object bodies read in large chunks (see the module docs).
struct FastBodies {
    inner: s3s_fs::FileSystem,
    root: PathBuf,
}

/// Bytes per chunk of an object body.
const BODY_CHUNK: usize = 1 << 20;

/// Forwards operations to s3s-fs. `#[async_trait]` does not see into macro output, so this
/// spells out its desugaring (a boxed future borrowing `self`).
macro_rules! delegate {
    ($($op:ident: $input:ident => $output:ident),* $(,)?) => {
        $(
            fn $op<'life0, 'async_trait>(
                &'life0 self,
                req: S3Request<dto::$input>,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<Output = S3Result<S3Response<dto::$output>>>
                        + Send
                        + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                self.inner.$op(req)
            }
        )*
    };
}

/// A stream of body chunks fed by a blocking reader thread.
struct Chunks(tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>);

impl futures::Stream for Chunks {
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Reads `len` bytes of `path` from `start` in [`BODY_CHUNK`]s on a blocking thread.
fn body(path: PathBuf, start: u64, len: u64) -> Chunks {
    use std::io::{Read, Seek, SeekFrom};
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let read = |tx: &tokio::sync::mpsc::Sender<_>| -> std::io::Result<()> {
            let mut file = std::fs::File::open(&path)?;
            file.seek(SeekFrom::Start(start))?;
            let mut left = len;
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(BODY_CHUNK).min(BODY_CHUNK);
                let mut buf = vec![0; n];
                file.read_exact(&mut buf)?;
                left -= n as u64;
                if tx.blocking_send(Ok(bytes::Bytes::from(buf))).is_err() {
                    return Ok(()); // the client went away
                }
            }
            Ok(())
        };
        if let Err(e) = read(&tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Chunks(rx)
}

/// First byte of a `Content-Range: bytes FIRST-LAST/SIZE` value.
fn range_start(content_range: &str) -> Option<u64> {
    content_range
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

#[async_trait::async_trait]
impl S3 for FastBodies {
    delegate!(
        create_bucket: CreateBucketInput => CreateBucketOutput,
        copy_object: CopyObjectInput => CopyObjectOutput,
        delete_bucket: DeleteBucketInput => DeleteBucketOutput,
        delete_object: DeleteObjectInput => DeleteObjectOutput,
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput,
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput,
        head_bucket: HeadBucketInput => HeadBucketOutput,
        head_object: HeadObjectInput => HeadObjectOutput,
        list_buckets: ListBucketsInput => ListBucketsOutput,
        list_objects: ListObjectsInput => ListObjectsOutput,
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output,
        put_object: PutObjectInput => PutObjectOutput,
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput,
        upload_part: UploadPartInput => UploadPartOutput,
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput,
        list_parts: ListPartsInput => ListPartsOutput,
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput,
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput,
    );

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        // Only plain keys get the fast body (s3s-fs resolves the rest within its root).
        let plain = !req.input.key.split('/').any(|c| c == ".." || c == ".")
            && !req.input.bucket.contains(['/', '.']);
        let path = self.root.join(&req.input.bucket).join(&req.input.key);
        let mut resp = self.inner.get_object(req).await?;
        let out = &mut resp.output;
        let len = out.content_length.and_then(|l| u64::try_from(l).ok());
        let start = match &out.content_range {
            Some(r) => range_start(r),
            None => Some(0),
        };
        if let (true, Some(len), Some(start)) = (plain, len, start) {
            out.body = Some(StreamingBlob::wrap(body(path, start, len)));
        }
        Ok(resp)
    }
}
