//! How every component reaches the apiserver: a kube-rs client with the admin token,
//! trusting the cluster CA. The scheduler, the controllers and the node agents all use it,
//! in this process or another; none of them touches the store.

use rustls::pki_types::{CertificateDer, pem::PemObject};

/// Where the apiserver is and how to prove who we are.
#[derive(Clone)]
pub struct Credentials {
    /// `https://host:port`.
    pub server: String,
    /// The bearer token.
    pub token: String,
    /// The cluster CA, PEM.
    pub ca_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL does not parse.
    #[error("invalid apiserver URL {0:?}")]
    Url(String),
    /// The CA is not PEM.
    #[error("the cluster CA is not a PEM certificate: {0}")]
    Ca(String),
    /// kube-rs refused the configuration.
    #[error("failed to build the API client: {0}")]
    Kube(#[from] kube::Error),
}

impl Credentials {
    /// A kube-rs client for these credentials.
    pub fn client(&self) -> Result<kube::Client, ClientError> {
        Ok(kube::Client::try_from(self.config()?)?)
    }

    /// A kube-rs client that names itself `component` in its User-Agent, as Kubernetes'
    /// components do: the apiserver records what it writes under that field manager
    /// (`kubelet`, `kube-scheduler`).
    pub fn client_as(&self, component: &'static str) -> Result<kube::Client, ClientError> {
        let mut config = self.config()?;
        let agent = http::HeaderValue::from_static(component);
        config.headers.push((http::header::USER_AGENT, agent));
        Ok(kube::Client::try_from(config)?)
    }

    /// A kube-rs client that hands back every answer as it comes: kube-rs's own retries
    /// of a 503 (up to fifteen, with a growing pause) would hide exactly what a health
    /// check asks about.
    pub fn client_without_retries(&self) -> Result<kube::Client, ClientError> {
        let mut config = self.config()?;
        config.default_retry = false;
        Ok(kube::Client::try_from(config)?)
    }

    fn config(&self) -> Result<kube::Config, ClientError> {
        let url = self
            .server
            .parse()
            .map_err(|_| ClientError::Url(self.server.clone()))?;
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
            .map_err(|e| ClientError::Ca(e.to_string()))?;
        let mut config = kube::Config::new(url);
        config.root_cert = Some(vec![ca.to_vec()]);
        config.auth_info.token = Some(self.token.clone().into());
        config.default_namespace = "default".into();
        Ok(config)
    }
}
