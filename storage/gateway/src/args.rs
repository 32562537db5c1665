//! `nightcap gateway` flags. Each has a one-line help; runbooks/downloads.md explains them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use nightcap_api::quantity::{parse_duration, parse_size};

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// TokenReview + SubjectAccessReview; captures are PacketCapture objects.
    Kubernetes,
    /// A static token file; captures are what the store holds.
    TokenFile,
}

/// `nightcap gateway` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on (plain HTTP; terminate TLS in front).
    #[arg(long, env = "NIGHTCAP_GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Store URL: s3://bucket/prefix, file:///dir, gs://…, az://….
    #[arg(long, env = "NIGHTCAP_STORE", conflicts_with = "store_config")]
    pub store: Option<String>,
    /// Store configuration file (YAML StoreConfig).
    #[arg(long, env = "NIGHTCAP_STORE_CONFIG")]
    pub store_config: Option<PathBuf>,
    /// How callers are authenticated.
    #[arg(
        long,
        env = "NIGHTCAP_GATEWAY_AUTH",
        value_enum,
        default_value = "kubernetes"
    )]
    pub auth: AuthMode,
    /// Token file for `--auth token-file`.
    #[arg(
        long,
        env = "NIGHTCAP_GATEWAY_TOKEN_FILE",
        required_if_eq("auth", "token-file")
    )]
    pub token_file: Option<PathBuf>,
    /// Accepted TokenReview audience (repeat; default: the API server's).
    #[arg(
        long = "audience",
        env = "NIGHTCAP_GATEWAY_AUDIENCES",
        value_delimiter = ','
    )]
    pub audiences: Vec<String>,
    /// HMAC key file for share links and gateway URLs (≥ 32 bytes).
    #[arg(long, env = "NIGHTCAP_GATEWAY_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// Public base URL of the gateway (share links, gateway-signed URLs).
    #[arg(
        long,
        env = "NIGHTCAP_GATEWAY_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: String,
    /// Default expiry of file URLs.
    #[arg(long, env = "NIGHTCAP_GATEWAY_DEFAULT_EXPIRY", default_value = "15m", value_parser = parse_duration)]
    pub default_expiry: Duration,
    /// Default expiry of share links.
    #[arg(long, env = "NIGHTCAP_GATEWAY_LINK_EXPIRY", default_value = "24h", value_parser = parse_duration)]
    pub link_expiry: Duration,
    /// Longest expiry a caller may ask for (at most 7d).
    #[arg(long, env = "NIGHTCAP_GATEWAY_MAX_EXPIRY", default_value = "7d", value_parser = parse_duration)]
    pub max_expiry: Duration,
    /// How often to delete files of expired captures (0: never).
    #[arg(long, env = "NIGHTCAP_RETENTION_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub retention_interval: Duration,
    /// Bytes per ranged GET while streaming files.zip.
    #[arg(long, env = "NIGHTCAP_GATEWAY_ZIP_RANGE_BYTES", default_value = "16MiB", value_parser = parse_size)]
    pub zip_range_bytes: u64,
    /// Ranged GETs in flight per files.zip download (about 1 MiB each).
    #[arg(long, env = "NIGHTCAP_GATEWAY_ZIP_PARALLEL", default_value_t = 4)]
    pub zip_parallel: usize,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    fn parse(argv: &[&str]) -> GatewayArgs {
        let mut full = vec!["gateway"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full)
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
            .args
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let a = parse(&[]);
        assert_eq!(a.default_expiry, Duration::from_secs(15 * 60));
        assert_eq!(a.link_expiry, Duration::from_secs(24 * 3600));
        assert_eq!(a.max_expiry, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(a.retention_interval, Duration::from_secs(5 * 60));
        assert_eq!(a.zip_range_bytes, 16 << 20);
        assert_eq!(a.zip_parallel, 4);
        assert_eq!(a.auth, AuthMode::Kubernetes);
    }

    #[test]
    fn durations_and_sizes_use_the_one_grammar() {
        let a = parse(&[
            "--default-expiry",
            "1h30m",
            "--link-expiry",
            "2d",
            "--max-expiry",
            "7d",
            "--retention-interval",
            "0",
            "--zip-range-bytes",
            "1MB",
        ]);
        assert_eq!(a.default_expiry, Duration::from_secs(5400));
        assert_eq!(a.link_expiry, Duration::from_secs(2 * 24 * 3600));
        assert_eq!(a.retention_interval, Duration::ZERO);
        assert_eq!(a.zip_range_bytes, 1_000_000);
        assert_eq!(
            parse(&["--zip-range-bytes", "65536"]).zip_range_bytes,
            65536
        );
        // Spellings outside the grammar are refused at parse time.
        for bad in [
            ["--max-expiry", "7days"],
            ["--default-expiry", "15 min"],
            ["--zip-range-bytes", "16 megs"],
        ] {
            let mut full = vec!["gateway"];
            full.extend_from_slice(&bad);
            assert!(Cli::try_parse_from(full).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn help_is_one_short_line_per_flag() {
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(!help.is_empty(), "--{} has no help", arg.get_id());
            assert!(!help.contains('\n'), "--{}: {help:?}", arg.get_id());
            assert!(help.chars().count() <= 79, "--{}: {help:?}", arg.get_id());
            assert!(
                arg.get_long_help().is_none(),
                "--{} has a long help",
                arg.get_id()
            );
        }
    }
}
