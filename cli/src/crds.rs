//! `nightcap crds`: the CRD YAML generated from the Rust types.

use std::io::Write;

use anyhow::Context;

/// Arguments of `nightcap crds`.
#[derive(Debug, clap::Args)]
pub struct CrdsArgs {}

/// Prints every CRD as one multi-document YAML stream.
pub fn run(_args: &CrdsArgs) -> anyhow::Result<()> {
    let yaml = nightcap_api::crds_yaml().context("Failed to render the CRDs as YAML")?;
    std::io::stdout()
        .lock()
        .write_all(yaml.as_bytes())
        .context("Failed to write the CRDs to stdout")
}
