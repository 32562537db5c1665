//! `nightcap-capture`: the capture engine alone (the same as `nightcap capture`), for hosts
//! that only need packet captures and for this crate's end-to-end tests.

use clap::Parser;

/// Capture packets into rotated pcapng files in object storage.
#[derive(Debug, Parser)]
#[command(name = "nightcap-capture", version)]
struct Cli {
    #[command(flatten)]
    log: nightcap_process::LogArgs,
    #[command(flatten)]
    args: nightcap_capture_job::CaptureArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = nightcap_process::init_logging(&cli.log) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    if let Err(e) = nightcap_capture_job::run(cli.args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
