//! Optional TLS: a throw-away CA and a serving certificate for `127.0.0.1`/`localhost`, made at
//! start-up (kubectl only sends bearer tokens over TLS).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// The CA clients trust and the acceptor the server uses.
pub(crate) struct Tls {
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn cert_err(e: rcgen::Error) -> Error {
    Error::Config(format!(
        "generating the test CA or serving certificate: {e}"
    ))
}

/// Make a CA and a serving certificate signed by it.
pub(crate) fn generate() -> Result<Tls> {
    let ca_key = KeyPair::generate().map_err(cert_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "nightcap-testcluster CA");
    let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(cert_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "nightcap-testcluster");
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(|e| Error::Config(format!("TLS serving certificate: {e}")))?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().to_vec(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}
