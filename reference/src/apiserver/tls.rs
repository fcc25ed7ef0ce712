//! TLS for the apiserver: a cluster CA of its own and a serving certificate signed by it.
//!
//! The API is served over HTTPS only. That is not just hygiene: kubectl (client-go) never
//! sends a bearer token to an `http://` server, so token authentication needs TLS.
//!
//! On first start the control plane creates a CA (`ca.crt`, `ca.key`, mode 0600) in its
//! data directory; on every start it signs a fresh serving certificate for `localhost`,
//! `127.0.0.1`, `::1` and the listen address. The kubeconfig carries the CA, so clients
//! verify the server without any `--insecure-skip-tls-verify`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the TLS material could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a key or certificate failed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Generating or parsing a key or certificate failed.
    #[error("failed to make the cluster certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("failed to configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// What the apiserver needs to serve TLS, and what clients need to trust it.
pub struct TlsMaterial {
    /// The CA certificate, PEM, for kubeconfigs.
    pub ca_pem: String,
    /// The rustls configuration for the listener.
    pub server_config: Arc<rustls::ServerConfig>,
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "shipshape-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Loads the cluster CA from `dir` (creating it the first time) and signs a serving
/// certificate for `listen`.
pub fn load_or_create(dir: &Path, listen: IpAddr) -> Result<TlsMaterial, TlsError> {
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let io = |action, path: &Path| {
        let path = path.display().to_string();
        move |source| TlsError::Io {
            action,
            path,
            source,
        }
    };
    let (ca_pem, ca_key_pair) = match (
        std::fs::read_to_string(&ca_crt),
        std::fs::read_to_string(&ca_key),
    ) {
        (Ok(crt), Ok(key)) => (crt, KeyPair::from_pem(&key)?),
        _ => {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            super::super::control_plane::write_private(&ca_key, &key.serialize_pem())
                .map_err(|e| io("write", &ca_key)(std::io::Error::other(e.to_string())))?;
            std::fs::write(&ca_crt, cert.pem()).map_err(io("write", &ca_crt))?;
            (cert.pem(), key)
        }
    };
    let issuer = Issuer::new(ca_params()?, ca_key_pair);

    let mut names = vec!["localhost".to_owned()];
    let mut ips: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    if !listen.is_unspecified() && !ips.contains(&listen) {
        ips.push(listen);
    }
    if let Ok(host) = std::env::var("HOSTNAME")
        && !host.is_empty()
    {
        names.push(host);
    }
    let mut params = CertificateParams::new(names)?;
    params
        .subject_alt_names
        .extend(ips.into_iter().map(SanType::IpAddress));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "shipshape-apiserver");
    params.distinguished_name = dn;
    let server_key = KeyPair::generate()?;
    let server_cert = params.signed_by(&server_key, &issuer)?;

    let ca_der =
        rustls::pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes()).map_err(|e| {
            TlsError::Io {
                action: "parse",
                path: ca_crt.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
    let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone(), ca_der];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem,
        server_config: Arc::new(config),
    })
}
