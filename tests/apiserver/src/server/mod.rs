//! [`ApiServer`]: the RAII guard that serves the API on 127.0.0.1 and hands out clients.

mod discovery;
mod http;
mod portforward;
mod resource;
mod reviews;
mod table;
mod tls;
mod watch;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::json;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    error::{Error, Result},
    gc, kinds,
    ops::{self, WriteCtx},
    policy::{ADMIN, Policy, User},
    store::Store,
};

/// Tunables of the test server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// How many changes are kept for watches to resume from; older versions get 410 Gone.
    pub history_limit: usize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Register nightcap's CRDs (`nightcap_api::crds()`) at start.
    pub nightcap_crds: bool,
    /// Treat requests without a bearer token as this user instead of `system:anonymous`, like
    /// the old insecure port: kubectl never sends tokens over plain HTTP.
    pub anonymous_user: Option<String>,
    /// Serve HTTPS with a CA made at start-up (clients from this server trust it; the
    /// kubeconfig carries it). kubectl sends bearer tokens only over TLS.
    pub tls: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            port: 0,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(5),
            nightcap_crds: true,
            anonymous_user: None,
            tls: false,
        }
    }
}

/// State shared by the HTTP handlers and background tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Store,
    pub policy: RwLock<Policy>,
    pub opts: ServerOptions,
}

impl Shared {
    pub fn policy(&self) -> Policy {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The token of a service account, adding it (with no rules) to the policy if needed.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let mut policy = self.policy.write().unwrap_or_else(|e| e.into_inner());
        let full = format!("system:serviceaccount:{namespace}:{name}");
        if let Some(t) = policy.token_of(&full) {
            return t.to_string();
        }
        let sa = User::service_account(namespace, name);
        let token = sa.token.clone();
        *policy = policy.clone().user(sa);
        token
    }
}

/// An in-process Kubernetes API server for tests (see the crate docs). Stops when dropped.
#[derive(Debug)]
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The CA (PEM, DER) when serving TLS.
    ca: Option<(String, Vec<u8>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shared.store.close_watches();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ApiServer {
    /// Start on a free port with `policy` (the `admin` user always exists).
    pub async fn start(policy: Policy) -> Result<Self> {
        Self::start_with(policy, ServerOptions::default()).await
    }

    /// Start with explicit options.
    pub async fn start_with(policy: Policy, opts: ServerOptions) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", opts.port))
            .await
            .map_err(|source| Error::Bind {
                port: opts.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            port: opts.port,
            source,
        })?;
        let shared = Arc::new(Shared {
            store: Store::new(opts.history_limit.max(1)),
            policy: RwLock::new(Policy::new()),
            opts,
        });
        *shared.policy.write().unwrap_or_else(|e| e.into_inner()) = merge_admin(policy);
        shared.store.write(|st| {
            let mut ctx = WriteCtx::new("kube-apiserver");
            kinds::bootstrap(st, &mut ctx);
        });
        let server_crds = shared.opts.nightcap_crds;
        let tls = if shared.opts.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let ca = tls.as_ref().map(|t| (t.ca_pem.clone(), t.ca_der.clone()));
        let acceptor = tls.map(|t| t.acceptor);
        let router = http::router(shared.clone());
        let accept = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        // Like kube-apiserver (Go sets TCP_NODELAY on every connection): a small
                        // watch event must not wait for the client's delayed ACK (~40 ms).
                        let _ = stream.set_nodelay(true);
                        let svc = TowerToHyperService::new(router.clone());
                        let acceptor = acceptor.clone();
                        conns.spawn(async move {
                            match acceptor {
                                None => serve(stream, svc).await,
                                Some(acc) => match acc.accept(stream).await {
                                    Ok(tls_stream) => serve(tls_stream, svc).await,
                                    Err(e) => tracing::debug!(error = %e, "TLS handshake failed."),
                                },
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        let gc_task = tokio::spawn(gc::run(shared.clone()));
        let server = Self {
            shared,
            addr,
            ca,
            tasks: vec![accept, gc_task],
        };
        if server_crds {
            for crd in nightcap_api::crds() {
                server.register_crd(&crd)?;
            }
        }
        Ok(server)
    }

    /// `http://127.0.0.1:PORT` (`https://` with [`ServerOptions::tls`]).
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA certificate (PEM) clients must trust, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(|(pem, _)| pem.as_str())
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.shared.policy()
    }

    /// Replace the policy (the admin user is kept).
    pub fn set_policy(&self, policy: Policy) {
        *self
            .shared
            .policy
            .write()
            .unwrap_or_else(|e| e.into_inner()) = merge_admin(policy);
    }

    /// Add or replace one user.
    pub fn add_user(&self, user: User) {
        let p = self.policy().user(user);
        self.set_policy(p);
    }

    /// The bearer token of a policy user.
    pub fn token_for(&self, user: &str) -> Result<String> {
        self.policy()
            .token_of(user)
            .map(str::to_string)
            .ok_or_else(|| Error::UnknownUser(user.to_string()))
    }

    /// The token of a service account, adding the account (with no rules) to the policy if needed,
    /// like the token a real cluster mounts into every pod.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        self.shared.service_account_token(namespace, name)
    }

    /// A kube client authenticating as `user` (default namespace `default`).
    pub fn client_for(&self, user: &str) -> Result<kube::Client> {
        let token = self.token_for(user)?;
        self.client_with_token(&token)
    }

    /// A kube client for an arbitrary bearer token (possibly invalid, for 401 tests).
    pub fn client_with_token(&self, token: &str) -> Result<kube::Client> {
        let mut cfg = self.client_config()?;
        cfg.auth_info.token = Some(token.to_string().into());
        kube::Client::try_from(cfg).map_err(Error::Client)
    }

    /// The administrator's client.
    pub fn admin_client(&self) -> Result<kube::Client> {
        self.client_for(ADMIN)
    }

    /// A kube `Config` pointing at this server (no credentials).
    pub fn client_config(&self) -> Result<kube::Config> {
        let uri = self
            .url()
            .parse()
            .map_err(|e| Error::Config(format!("server URL: {e}")))?;
        let mut cfg = kube::Config::new(uri);
        cfg.default_namespace = "default".into();
        cfg.read_timeout = None;
        if let Some((_, der)) = &self.ca {
            cfg.root_cert = Some(vec![der.clone()]);
        }
        Ok(cfg)
    }

    /// Write a kubeconfig with one context per policy user (current context: admin).
    pub fn kubeconfig(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.kubeconfig_yaml(ADMIN)?).map_err(|source| Error::Io {
            what: format!("writing kubeconfig {}", path.display()),
            source,
        })
    }

    /// A kubeconfig that authenticates only as service account `namespace/name` (default
    /// namespace: its own), for a process that must run as that account, like a Deployment's
    /// pod would. Adds the account to the policy (with no rules) if needed.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<String> {
        let token = self.service_account_token(namespace, name);
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testcluster", "cluster": self.cluster_entry()}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "testcluster", "user": user, "namespace": namespace}}],
            "current-context": user,
            "preferences": {},
        });
        serde_yaml::to_string(&doc).map_err(|e| Error::Config(format!("kubeconfig: {e}")))
    }

    fn cluster_entry(&self) -> serde_json::Value {
        let mut cluster = json!({"server": self.url()});
        if let Some(pem) = self.ca_pem() {
            use base64::Engine;
            cluster["certificate-authority-data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(pem));
        }
        cluster
    }

    /// The kubeconfig text with `current` as the current context.
    pub fn kubeconfig_yaml(&self, current: &str) -> Result<String> {
        let policy = self.policy();
        let users: Vec<_> = policy
            .users()
            .iter()
            .map(|u| json!({"name": u.name, "user": {"token": u.token}}))
            .collect();
        let contexts: Vec<_> = policy
            .users()
            .iter()
            .map(|u| json!({"name": u.name, "context": {"cluster": "testcluster", "user": u.name, "namespace": "default"}}))
            .collect();
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testcluster", "cluster": self.cluster_entry()}],
            "users": users,
            "contexts": contexts,
            "current-context": current,
            "preferences": {},
        });
        serde_yaml::to_string(&doc).map_err(|e| Error::Config(format!("kubeconfig: {e}")))
    }

    /// Register a CRD (as if `kubectl apply`-ed): its resources are served from now on.
    pub fn register_crd(&self, crd: &CustomResourceDefinition) -> Result<()> {
        let v = serde_json::to_value(crd).map_err(|e| Error::Config(format!("CRD: {e}")))?;
        self.shared.store.write(|st| {
            let rt = st
                .registry
                .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
                .ok_or_else(|| Error::Config("CRD resource missing".into()))?;
            let mut ctx = WriteCtx::new("testcluster");
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match ops::create(st, &rt, "", v.clone(), &mut ctx) {
                Ok(_) => Ok(()),
                Err(e) if e.code == 409 => {
                    ops::update(st, &rt, "", &name, v, ops::Sub::Main, &mut ctx)
                        .map(|_| ())
                        .map_err(Error::Api)
                }
                Err(e) => Err(Error::Api(e)),
            }
        })
    }

    /// Forget the change history and close every watch: clients resuming from an older
    /// resourceVersion get 410 Gone (an ERROR event with reason Expired) and must re-list.
    pub fn compact(&self) {
        self.shared.store.write(|st| st.compact());
        self.shared.store.close_watches();
    }

    /// Close every open watch stream (clients reconnect from their last resourceVersion).
    pub fn close_watches(&self) {
        self.shared.store.close_watches();
    }

    /// Every stored object whose kind is in `kinds` (all objects when empty), as served.
    pub fn objects(&self, kinds: &[&str]) -> Vec<serde_json::Value> {
        let st = self.shared.store.read();
        let mut out: Vec<serde_json::Value> = st
            .all_objects()
            .into_iter()
            .filter(|(_, o)| {
                kinds.is_empty() || kinds.contains(&o["kind"].as_str().unwrap_or_default())
            })
            .map(|(_, o)| (*o).clone())
            .collect();
        out.sort_by_key(|o| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse::<u64>().ok())
        });
        out
    }

    /// Check objects against their schemas: built-in kinds with `kubernetes-validate --strict`
    /// for Kubernetes 1.33, custom resources with their registered CRD (unknown fields are
    /// errors). On failure the dumped files are kept and their directory is in the error.
    pub fn check_objects(&self, objects: &[serde_json::Value]) -> Result<()> {
        let registry = self.shared.store.read().registry.clone();
        let dir = tempfile::Builder::new()
            .prefix("schema-check-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "creating a schema-check directory".into(),
                source,
            })?;
        match crate::schema_check::check(objects, &registry, dir.path()) {
            Ok(()) => Ok(()),
            Err(Error::SchemaCheck(problems)) => {
                let kept = dir.keep();
                Err(Error::SchemaCheck(format!(
                    "{problems}\n(objects dumped in {})",
                    kept.display()
                )))
            }
            Err(other) => Err(other),
        }
    }

    /// [`check_objects`](Self::check_objects) on every stored object of `kinds`.
    pub fn check_stored(&self, kinds: &[&str]) -> Result<()> {
        self.check_objects(&self.objects(kinds))
    }

    /// The current cluster-wide resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.read().rv
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

async fn serve<I>(io: I, svc: TowerToHyperService<axum::Router>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "API connection ended with an error.");
    }
}

fn merge_admin(policy: Policy) -> Policy {
    if policy.token_of(ADMIN).is_some() {
        policy
    } else {
        policy.user(User::new(ADMIN).group("system:masters"))
    }
}
