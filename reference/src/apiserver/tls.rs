//! TLS for the apiserver: a cluster CA of its own and a serving certificate signed by it.
//!
//! The API is served over HTTPS only. That is not just hygiene: kubectl (client-go) never
//! sends a bearer token to an `http://` server, so token authentication needs TLS.
//!
//! On first start the control plane creates a CA (`ca.crt`, `ca.key`, mode 0600) in its
//! data directory; on every start it signs a fresh serving certificate for `localhost`,
//! `127.0.0.1`, `::1`, the listen address, `$HOSTNAME` and whatever other names and
//! addresses it was told clients use (`--tls-san`, as k3s calls it: the address of this
//! host that node agents in containers reach it at, or a load balancer's name). The
//! kubeconfig carries the CA, so clients verify the server without any
//! `--insecure-skip-tls-verify`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
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
    params
        .distinguished_name
        .push(DnType::CommonName, "shipshape-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// The cluster CA, as loaded from (or first created in) a data directory.
struct ClusterCa {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// Loads the cluster CA from `dir` (`ca.crt`, `ca.key`), creating it the first time.
fn load_or_create_ca(dir: &Path) -> Result<ClusterCa, TlsError> {
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
    let (pem, key_pair) = match (
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
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map_err(|e| io("parse", &ca_crt)(std::io::Error::other(e.to_string())))?;
    Ok(ClusterCa {
        pem,
        der,
        issuer: Issuer::new(ca_params()?, key_pair),
    })
}

/// The names and addresses a certificate of this host is valid for: `localhost`,
/// loopback, `listen` and `$HOSTNAME`.
fn host_names(listen: IpAddr) -> Result<CertificateParams, rcgen::Error> {
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
    Ok(params)
}

/// Signs a certificate for `params` with common name `name`; the chain and the key.
fn sign(
    ca: &ClusterCa,
    mut params: CertificateParams,
    name: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((
        vec![cert.der().clone(), ca.der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    ))
}

/// What the members of a control plane need to talk to each other: each proves it holds a
/// certificate of the cluster CA, in both directions.
pub struct PeerTls {
    /// For the peer listener: asks every client for a certificate of the cluster CA.
    pub server: Arc<rustls::ServerConfig>,
    /// For connections to other members: trusts the cluster CA, shows this member's
    /// certificate.
    pub client: Arc<rustls::ClientConfig>,
}

/// Loads the cluster CA from `dir` (creating it the first time) and signs this member's
/// peer certificate, valid for `host` (the IP address or the host name its peers reach it
/// at), as server and as client.
pub fn peer_tls(dir: &Path, host: &str, member: u64) -> Result<PeerTls, TlsError> {
    let ca = load_or_create_ca(dir)?;
    let mut params = match host.parse::<IpAddr>() {
        Ok(ip) => host_names(ip)?,
        Err(_) => {
            let mut params = host_names(std::net::Ipv4Addr::UNSPECIFIED.into())?;
            let name = host.to_owned().try_into()?;
            params.subject_alt_names.push(SanType::DnsName(name));
            params
        }
    };
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let (chain, key) = sign(&ca, params, &format!("shipshape-member-{member}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone())?;
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(PeerTls {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// Loads the cluster CA from `dir` (creating it the first time) and signs a serving
/// certificate for `listen` and `extra_names` (IP addresses or DNS names).
pub fn load_or_create(
    dir: &Path,
    listen: IpAddr,
    extra_names: &[String],
) -> Result<TlsMaterial, TlsError> {
    let ca = load_or_create_ca(dir)?;
    let mut params = host_names(listen)?;
    for name in extra_names {
        params.subject_alt_names.push(match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into()?),
        });
    }
    let (chain, key) = sign(&ca, params, "shipshape-apiserver")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca.pem,
        server_config: Arc::new(config),
    })
}
