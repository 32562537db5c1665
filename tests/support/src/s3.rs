//! [`S3Server`]: a real S3 endpoint (s3s-fs 0.14.1 over a temp directory) with SigV4
//! authentication, served in-process on 127.0.0.1.
//!
//! s3s verifies every signature (headers and pre-signed query strings, including expiry) against
//! one access/secret key pair, and denies unsigned requests, so tampered or expired URLs get a
//! real 403 from the server. The server runs on its own thread with its own tokio runtime, so it
//! works from plain `#[test]`s and from any async runtime; it stops on drop.
//!
//! Buckets are directories under [`S3Server::root_dir`] (that is how s3s-fs stores them).

use crate::error::{Error, Result};
use hyper_util::rt::TokioIo;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use s3s::{auth::SimpleAuth, service::S3ServiceBuilder};
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
        let base = std::env::temp_dir();
        let root = tempfile::Builder::new()
            .prefix("nightcap-s3-")
            .tempdir_in(&base)
            .map_err(|source| Error::TempDir { base, source })?;
        let access_key = format!("AKNC{:016X}", rand::random::<u64>());
        let secret_key = format!(
            "{:032x}{:08x}",
            rand::random::<u128>(),
            rand::random::<u32>()
        );

        let fs = s3s_fs::FileSystem::new(root.path())
            .map_err(|e| Error::S3(format!("opening root {}: {e:?}", root.path().display())))?;
        let mut builder = S3ServiceBuilder::new(fs);
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
