//! `kubectl-nightcap`: the kubectl plugin binary (krew naming). Parses and calls the library.

use clap::Parser;

fn main() {
    let cli = nightcap_kubectl::PluginCli::parse();
    if let Err(e) = nightcap_kubectl::init_logging(&cli.log) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    std::process::exit(nightcap_kubectl::run(cli.verb));
}
