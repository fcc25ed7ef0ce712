//! A minimal HTTPS client for black-box tests of the apiserver: it trusts the cluster CA
//! from the data directory and sends one request per connection.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::Value;

/// A response: status code and parsed JSON body (Null if not JSON).
pub struct Reply {
    pub code: u16,
    pub body: Value,
}

pub struct Client {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    token: Option<String>,
}

impl Client {
    /// A client for the control plane whose data directory is `dir`.
    pub fn new(dir: &Path, addr: SocketAddr, token: Option<&str>) -> Client {
        let ca = CertificateDer::from_pem_file(dir.join("ca.crt")).expect("ca.crt");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("ca added");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Client {
            addr,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            token: token.map(str::to_owned),
        }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        self.send(method, path, &[("content-type", content_type)], body)
            .await
    }

    /// A JSON request with extra headers.
    #[allow(dead_code)]
    pub async fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(method, path, &all, body).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let tls = self.tls.connect(name, tcp).await.expect("tls");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body))).expect("request"))
            .await
            .expect("response");
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            code,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, "application/json", Vec::new())
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(
            "POST",
            path,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
    }
}

/// Names of the items of a list reply.
pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
