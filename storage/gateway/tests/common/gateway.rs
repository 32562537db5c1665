//! Starting a real gateway (axum on 127.0.0.1:0) over a real store, for tests.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use nightcap_gateway::{
    GatewayOptions, GatewayState,
    auth::{Access, TokenEntry, TokenFile, TokenFileAccess},
    captures::Captures,
    router,
    sign::SigningKey,
};
use nightcap_storage::Store;
use nightcap_testsupport::S3Server;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, path::Path,
};

/// A running gateway; stops on drop.
pub struct TestGateway {
    pub base: String,
    /// Seconds added to the wall clock the gateway sees.
    pub skew: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves a gateway over `store`.
pub async fn start(
    store: Store,
    access: Arc<dyn Access>,
    captures: Arc<dyn Captures>,
    key: SigningKey,
) -> TestGateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let skew = Arc::new(AtomicI64::new(0));
    let s = skew.clone();
    let options = GatewayOptions {
        public_url: base.clone(),
        ..GatewayOptions::default()
    };
    let state = GatewayState::new(store, access, captures, key, options)
        .expect("valid gateway options")
        .with_clock(Arc::new(move || {
            Utc::now() + chrono::Duration::seconds(s.load(Ordering::SeqCst))
        }));
    let app = router(Arc::new(state));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    TestGateway { base, skew, task }
}

/// The S3 store of a test server, through our own StoreConfig.
pub fn s3_store(s3: &S3Server, prefix: &str) -> Store {
    super::objects::s3_config(s3, prefix)
        .open()
        .expect("open the S3 store")
}

/// alice reads team-a, bob team-b, carol everything, dave nothing.
pub const USERS: [(&str, &str); 4] = [
    ("alice", "alice-token-0123456789"),
    ("bob", "bob-token-0123456789ab"),
    ("carol", "carol-token-0123456789"),
    ("dave", "dave-token-0123456789a"),
];

pub fn token(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, t)| *t)
        .expect("known user")
}

/// Namespaces each test user may read.
pub fn readable(user: &str) -> &'static [&'static str] {
    match user {
        "alice" => &["team-a"],
        "bob" => &["team-b"],
        "carol" => &["*"],
        _ => &[],
    }
}

pub fn token_access() -> Arc<TokenFileAccess> {
    let tokens = USERS
        .iter()
        .map(|(user, tok)| TokenEntry {
            user: user.to_string(),
            token: Some(tok.to_string()),
            sha256: None,
            namespaces: readable(user).iter().map(|s| s.to_string()).collect(),
            edit: false,
        })
        .collect();
    Arc::new(TokenFileAccess::new(TokenFile { tokens }).expect("valid token file"))
}

pub fn test_key(seed: u8) -> SigningKey {
    SigningKey::new(vec![seed; 32]).expect("long enough")
}

/// A real store that counts every call made to it.
#[derive(Debug)]
pub struct Counting {
    pub inner: Arc<dyn ObjectStore>,
    pub calls: AtomicU64,
}

impl Counting {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: AtomicU64::new(0),
        })
    }
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
    pub fn count(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        l: &Path,
        p: PutPayload,
        o: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.tick();
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.tick();
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &Path, o: GetOptions) -> object_store::Result<GetResult> {
        self.tick();
        self.inner.get_opts(l, o).await
    }
    fn delete_stream(
        &self,
        l: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.tick();
        self.inner.delete_stream(l)
    }
    fn list(&self, p: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.tick();
        self.inner.list(p)
    }
    async fn list_with_delimiter(&self, p: Option<&Path>) -> object_store::Result<ListResult> {
        self.tick();
        self.inner.list_with_delimiter(p).await
    }
    async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.tick();
        self.inner.copy_opts(f, t, o).await
    }
}

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Sends `GET {raw_path}` exactly as given (no client-side normalisation of `..` or `%2E`) and
/// returns the status code.
pub async fn raw_get(base: &str, raw_path: &str, bearer: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {raw_path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read response");
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}
