//! `nightcap`: one binary for every component (scheduler, triggers, capture, gateway, local
//! mode) and the kubectl plugin verbs. `main` only parses arguments and dispatches.

mod crds;

use clap::{Parser, Subcommand};

/// Event-driven packet captures for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "nightcap", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: nightcap_process::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture packets (eBPF-filtered) into rotated pcapng files in object storage.
    Capture(nightcap_capture_job::CaptureArgs),
    /// Print the CustomResourceDefinitions as YAML (what manifests/crds/ holds).
    Crds(crds::CrdsArgs),
    /// Serve capture files: listings with pre-signed URLs, files.zip and share links.
    Gateway(nightcap_gateway::GatewayArgs),
    /// Run nightcap on one host without Kubernetes: alerts, schedules, captures and downloads,
    /// from the same manifests as in a cluster.
    Local(nightcap_local::LocalArgs),
    /// Run the scheduler: per-node capture Jobs that follow the selected pods (leader-elected).
    Scheduler(nightcap_scheduler::SchedulerArgs),
    /// Start captures from alerts and schedules: Alertmanager/HTTP webhooks, NATS, cron.
    Triggers(nightcap_triggers::TriggersArgs),
    /// The kubectl plugin's verbs (`kubectl nightcap …`).
    #[command(flatten)]
    Plugin(nightcap_kubectl::Verb),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Plugin(verb) => {
            nightcap_kubectl::init_logging(&cli.log)?;
            std::process::exit(nightcap_kubectl::run(verb));
        }
        other => other,
    };
    nightcap_process::init_logging(&cli.log)?;
    match command {
        Command::Capture(args) => Ok(nightcap_capture_job::run(args)?),
        Command::Crds(args) => crds::run(&args),
        Command::Gateway(args) => Ok(nightcap_gateway::run_blocking(args)?),
        Command::Local(args) => {
            let code = nightcap_local::run_blocking(args)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Scheduler(args) => Ok(nightcap_scheduler::run_blocking(args)?),
        Command::Triggers(args) => Ok(nightcap_triggers::run(args)?),
        Command::Plugin(_) => unreachable!("dispatched above"),
    }
}
