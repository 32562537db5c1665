//! `kubectl nightcap`: the command on-call engineers type. Creates, lists, describes, watches,
//! downloads, stops and deletes PacketCaptures on the user's kubeconfig, or against one
//! `nightcap local` host with `--server URL --token T`.
//!
//! Everything lives here; the `kubectl-nightcap` binary and the `nightcap` binary's plugin verbs
//! only parse [`Verb`] and call [`run`]. Views are pure functions (objects and `now` in, text
//! out, in [`view`]); I/O stays in [`backend`], [`gateway`] and [`download`]. The plugin never
//! holds storage credentials: files come through the gateway, with the user's own token.

pub mod args;
pub mod backend;
pub mod create;
pub mod download;
pub mod error;
pub mod gateway;
pub mod kubeconfig;
pub mod portforward;
mod verbs;
pub mod view;
pub mod watch;
mod zipfile;

pub use args::ConnArgs;
pub use error::{Error, Result};

/// The plugin's verbs (also `nightcap create|get|…`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Verb {
    /// Create a capture (validated before anything is sent).
    Create(Box<args::CreateArgs>),
    /// List captures, or `get triggers` / `get schedules`.
    #[command(visible_alias = "list")]
    Get(args::GetArgs),
    /// Show a capture: trigger, conditions, nodes, files, recent Events.
    Describe(args::NameArgs),
    /// Follow a capture live until it ends (exit 1 unless it Succeeded).
    Watch(args::NameArgs),
    /// Download a capture's files through the gateway, checked by SHA-256.
    Download(args::DownloadArgs),
    /// Stop a capture early; its files are kept.
    Stop(args::StopArgs),
    /// Delete a capture.
    Delete(args::DeleteArgs),
    /// Print a share link to the capture's files.zip.
    Link(args::LinkArgs),
    /// Print the plugin's version.
    Version,
    /// Print a shell completion script.
    Completion(args::CompletionArgs),
}

/// The `kubectl-nightcap` command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "kubectl-nightcap",
    version,
    about = "Event-driven packet captures: kubectl plugin"
)]
pub struct PluginCli {
    /// The verb.
    #[command(subcommand)]
    pub verb: Verb,
    /// Logging.
    #[command(flatten)]
    pub log: nightcap_process::LogArgs,
}

/// Runs a verb and returns the process exit code (0 ok, 1 failure), having printed any error
/// to stderr the way kubectl does.
pub fn run(verb: Verb) -> i32 {
    let result = match nightcap_process::block_on("kubectl-nightcap", verbs::run(verb)) {
        Ok(r) => r,
        Err(e) => Err(Error::Config(e.to_string())),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", verbs::error_text(&e));
            1
        }
    }
}

/// Logging for the plugin: warnings only unless `--log`/`RUST_LOG` says otherwise.
pub fn init_logging(log: &nightcap_process::LogArgs) -> Result<(), nightcap_process::Error> {
    let mut log = log.clone();
    if log.filter.is_none() && std::env::var_os("RUST_LOG").is_none() {
        log.filter = Some("warn".into());
    }
    nightcap_process::init_logging(&log)
}

/// One HTTP client setup for the local API and the gateway.
pub(crate) fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("kubectl-nightcap/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::transport("building the HTTP client", e))
}
