//! Process set-up shared by every `nightcap` subcommand and the `nightcap-capture` binary:
//! logging to stderr, the async runtime, and the shutdown signal.
//!
//! Component crates expose `async fn run(args, shutdown)`; binaries call [`init_logging`],
//! build a runtime with [`runtime`] and pass [`shutdown_signal`]. Never: component logic.

use std::future::Future;

/// Logging flags, flattened into every subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Log filter (tracing EnvFilter syntax); default: RUST_LOG, else `info`.
    #[arg(
        long = "log",
        id = "log_filter",
        value_name = "FILTER",
        env = "NIGHTCAP_LOG",
        global = true
    )]
    pub filter: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "NIGHTCAP_LOG_JSON", global = true)]
    pub log_json: bool,
}

/// Why the process could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log filter does not parse.
    #[error("--log {filter:?}: {message}")]
    LogFilter {
        /// The filter as given.
        filter: String,
        /// What the parser said.
        message: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Installs the log subscriber: stderr (stdout carries results such as a capture's summary),
/// filtered by `--log`/`NIGHTCAP_LOG`, else `RUST_LOG`, else `info`. A subscriber installed
/// earlier (tests calling a component in-process) is kept.
pub fn init_logging(args: &LogArgs) -> Result<(), Error> {
    let filter = match &args.filter {
        Some(f) => tracing_subscriber::EnvFilter::try_new(f).map_err(|e| Error::LogFilter {
            filter: f.clone(),
            message: e.to_string(),
        })?,
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = if args.log_json {
        fmt.json().try_init()
    } else {
        fmt.try_init()
    };
    Ok(())
}

/// A multi-threaded runtime with I/O and timers, named after the component.
pub fn runtime(component: &str) -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(format!("{component}-rt"))
        .build()
        .map_err(Error::Runtime)
}

/// Runs `fut` to completion on a fresh [`runtime`].
pub fn block_on<F: Future>(component: &str, fut: F) -> Result<F::Output, Error> {
    Ok(runtime(component)?.block_on(fut))
}

/// Completes on the first SIGINT or SIGTERM.
///
/// Called inside a runtime, the handlers are registered at once, so a signal that arrives while
/// the work starts up is not lost; called outside one (to pass into `block_on`), they are
/// registered when the future is first polled.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let early = tokio::runtime::Handle::try_current().is_ok().then(handlers);
    async move {
        let (term, int) = match early {
            Some(h) => h,
            None => handlers(),
        };
        tokio::select! {
            () = recv(term) => {}
            () = recv(int) => {}
        }
    }
}

type Handlers = (
    Option<tokio::signal::unix::Signal>,
    Option<tokio::signal::unix::Signal>,
);

fn handlers() -> Handlers {
    use tokio::signal::unix::{SignalKind, signal};
    (
        signal(SignalKind::terminate()).ok(),
        signal(SignalKind::interrupt()).ok(),
    )
}

async fn recv(s: Option<tokio::signal::unix::Signal>) {
    match s {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_log_filter_names_the_flag() {
        let err = init_logging(&LogArgs {
            filter: Some("info,[=".into()),
            log_json: false,
        })
        .expect_err("not a filter");
        assert!(err.to_string().starts_with("--log"), "{err}");
    }

    #[test]
    fn shutdown_made_outside_the_runtime_completes_on_sigterm() {
        let shutdown = shutdown_signal();
        block_on("test", async {
            let mut shutdown = Box::pin(shutdown);
            // The first poll registers the handlers.
            std::future::poll_fn(|cx| {
                assert!(shutdown.as_mut().poll(cx).is_pending(), "no signal yet");
                std::task::Poll::Ready(())
            })
            .await;
            nix_kill_self();
            tokio::time::timeout(std::time::Duration::from_secs(10), shutdown)
                .await
                .expect("SIGTERM ends the shutdown future");
        })
        .expect("runtime");
    }

    #[test]
    fn shutdown_completes_on_sigterm() {
        block_on("test", async {
            let shutdown = shutdown_signal();
            nix_kill_self();
            tokio::time::timeout(std::time::Duration::from_secs(10), shutdown)
                .await
                .expect("SIGTERM ends the shutdown future");
        })
        .expect("runtime");
    }

    fn nix_kill_self() {
        nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM)
            .expect("kill");
    }
}
