//! Just enough of the Docker Engine API for a driver to inject faults into the machines
//! of a system that runs its containers on the local Docker engine.
//!
//! A fault must hit what the system under test runs, not what it says it runs: killing a
//! replica's container or wiping a lost machine's containers goes straight to the engine,
//! past the orchestrator. Containers are found by the labels the orchestrator puts on them
//! (for the reference: `shipshape.cluster`, `shipshape.node`, `shipshape.pod`,
//! `shipshape.container`), so nothing else on the engine is ever touched.
//!
//! The engine is where `DOCKER_HOST` points (`unix://` or `tcp://`), else
//! `/var/run/docker.sock`, as for the `docker` command. Requests go over [`plain_http`],
//! one per connection.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::driver::{HttpRequest, HttpResponse};
use crate::plain_http;

/// How long the engine may take to answer one request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A Docker engine, by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Engine {
    /// `unix:///path/to/socket` or `tcp://host:port`.
    host: String,
}

/// One container as the engine lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The engine's id.
    pub id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it is running now.
    pub running: bool,
}

/// A running container seen as a machine: its process and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// Its main process, as this host sees it.
    pub pid: u32,
    /// Its address on each network it is on, by network name.
    pub addresses: BTreeMap<String, std::net::IpAddr>,
    /// Each of those networks' gateway — the host, as the container sees it.
    pub gateways: BTreeMap<String, std::net::IpAddr>,
    /// The host ports its container ports are published on (`6443/tcp` → 32771).
    pub published: BTreeMap<String, u16>,
    /// Whether the engine removes it when it stops (`AutoRemove`): then a machine that
    /// lost power cannot be started again.
    pub removed_when_stopped: bool,
}

impl Engine {
    /// The engine at `host` (`unix:///path` or `tcp://host:port`).
    pub fn at(host: &str) -> Self {
        Self {
            host: host.to_owned(),
        }
    }

    /// The engine `DOCKER_HOST` names, else the local socket.
    pub fn from_env() -> Self {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        Self { host }
    }

    /// Where the engine is.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends one request to the engine and returns its answer, whatever the status.
    async fn send(&self, method: &str, path: &str) -> anyhow::Result<HttpResponse> {
        let request = HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            body: String::new(),
        };
        let attempt = async {
            if let Some(socket) = self.host.strip_prefix("unix://") {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .with_context(|| format!("failed to connect to {socket}"))?;
                plain_http::exchange(stream, "docker", &request).await
            } else if let Some(authority) = self.host.strip_prefix("tcp://") {
                plain_http::send(authority, &request).await
            } else {
                bail!(
                    "DOCKER_HOST={} is neither unix:// nor tcp://, which is all the kit knows",
                    self.host
                )
            }
        };
        tokio::time::timeout(TIMEOUT, attempt)
            .await
            .map_err(|_| anyhow!("no answer within {TIMEOUT:?}"))?
            .with_context(|| format!("{method} {path} on the Docker engine at {}", self.host))
    }

    /// Checks that the engine answers `/_ping` within `timeout`; says what it saw if not.
    pub async fn ping(&self, timeout: Duration) -> anyhow::Result<()> {
        let answer = match tokio::time::timeout(timeout, self.send("GET", "/_ping")).await {
            Ok(Ok(answer)) if answer.status == 200 => return Ok(()),
            Ok(Ok(answer)) => format!("it answered {} {:?}", answer.status, answer.body),
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        bail!("no Docker engine is reachable at {} ({answer})", self.host)
    }

    /// Lists the containers, running or not, that carry every one of `labels`.
    pub async fn containers(&self, labels: &[(&str, &str)]) -> anyhow::Result<Vec<Container>> {
        let path = format!("/containers/json?all=1&filters={}", label_filter(labels));
        let answer = self.send("GET", &path).await?;
        if answer.status != 200 {
            bail!(
                "the Docker engine refused to list containers: {} {}",
                answer.status,
                answer.body
            );
        }
        containers_of(&answer.body)
    }

    /// The names of every container on the engine, running or not.
    pub async fn container_names(&self) -> anyhow::Result<Vec<String>> {
        let answer = self.send("GET", "/containers/json?all=1").await?;
        if answer.status != 200 {
            bail!(
                "the Docker engine refused to list containers: {} {}",
                answer.status,
                answer.body
            );
        }
        let list: Vec<Value> = serde_json::from_str(&answer.body)
            .with_context(|| format!("the Docker engine listed containers as {:?}", answer.body))?;
        Ok(list
            .iter()
            .filter_map(|entry| entry.pointer("/Names/0")?.as_str())
            .map(|name| name.trim_start_matches('/').to_owned())
            .collect())
    }

    /// The process and addresses of a running container, from `docker inspect`.
    pub async fn machine(&self, id: &str) -> anyhow::Result<Machine> {
        let answer = self.send("GET", &format!("/containers/{id}/json")).await?;
        if answer.status != 200 {
            bail!(
                "the Docker engine did not inspect container {id}: {} {}",
                answer.status,
                answer.body.trim()
            );
        }
        machine_of(&answer.body).with_context(|| format!("container {id}"))
    }

    /// Kills a running container with SIGKILL, as `docker kill` does.
    pub async fn kill(&self, id: &str) -> anyhow::Result<()> {
        let answer = self.send("POST", &format!("/containers/{id}/kill")).await?;
        match answer.status {
            204 => Ok(()),
            status => bail!(
                "the Docker engine did not kill container {id}: {status} {}",
                answer.body.trim()
            ),
        }
    }

    /// Starts a container that is not running, as `docker start` does.
    pub async fn start(&self, id: &str) -> anyhow::Result<()> {
        let answer = self
            .send("POST", &format!("/containers/{id}/start"))
            .await?;
        match answer.status {
            204 | 304 => Ok(()),
            status => bail!(
                "the Docker engine did not start container {id}: {status} {}",
                answer.body.trim()
            ),
        }
    }

    /// The addresses of the containers on network `network`.
    pub async fn network_addresses(&self, network: &str) -> anyhow::Result<Vec<std::net::IpAddr>> {
        let answer = self
            .send("GET", &format!("/networks/{}", percent_encode(network)))
            .await?;
        if answer.status != 200 {
            bail!(
                "the Docker engine did not describe network {network}: {} {}",
                answer.status,
                answer.body.trim()
            );
        }
        let network: Value = serde_json::from_str(&answer.body).with_context(|| {
            format!("the Docker engine described a network as {:?}", answer.body)
        })?;
        Ok(addresses_on(&network))
    }

    /// Removes a container, running or not, with its anonymous volumes, as `docker rm -fv`
    /// does. One that is already gone, or already being removed (by its node agent, say),
    /// is not an error.
    pub async fn remove(&self, id: &str) -> anyhow::Result<()> {
        let answer = self
            .send("DELETE", &format!("/containers/{id}?force=1&v=1"))
            .await?;
        match answer.status {
            204 | 404 => Ok(()),
            409 if answer.body.contains("already in progress") => Ok(()),
            status => bail!(
                "the Docker engine did not remove container {id}: {status} {}",
                answer.body.trim()
            ),
        }
    }
}

/// The `filters` query value that selects objects carrying every one of `labels`.
fn label_filter(labels: &[(&str, &str)]) -> String {
    let filters = serde_json::json!({
        "label": labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
    });
    percent_encode(&filters.to_string())
}

/// The containers of a `GET /containers/json` answer.
fn containers_of(body: &str) -> anyhow::Result<Vec<Container>> {
    let list: Vec<Value> = serde_json::from_str(body)
        .with_context(|| format!("the Docker engine listed containers as {body:?}"))?;
    list.iter()
        .map(|entry| {
            let id = entry
                .get("Id")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("the Docker engine listed a container without an id"))?;
            let labels = entry
                .get("Labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
                .collect();
            Ok(Container {
                id: id.to_owned(),
                labels,
                running: entry.get("State").and_then(Value::as_str) == Some("running"),
            })
        })
        .collect()
}

/// The addresses (`IPv4Address`, `172.18.0.5/16`) of the containers of a `GET
/// /networks/NAME` answer.
fn addresses_on(network: &Value) -> Vec<std::net::IpAddr> {
    network
        .pointer("/Containers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(_, container)| {
            let address = container.get("IPv4Address")?.as_str()?;
            address.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The [`Machine`] of a `GET /containers/ID/json` answer.
fn machine_of(body: &str) -> anyhow::Result<Machine> {
    let inspected: Value = serde_json::from_str(body)
        .with_context(|| format!("the Docker engine described a container as {body:?}"))?;
    let pid = inspected
        .pointer("/State/Pid")
        .and_then(Value::as_u64)
        .filter(|pid| *pid > 0)
        .ok_or_else(|| anyhow!("it is not running"))?;
    let per_network = |field: &str| {
        inspected
            .pointer("/NetworkSettings/Networks")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(network, settings)| {
                let ip = settings.get(field)?.as_str()?.parse().ok()?;
                Some((network.clone(), ip))
            })
            .collect::<BTreeMap<_, _>>()
    };
    let addresses = per_network("IPAddress");
    let gateways = per_network("Gateway");
    let published = inspected
        .pointer("/NetworkSettings/Ports")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(port, bindings)| {
            let host_port = bindings.pointer("/0/HostPort")?.as_str()?.parse().ok()?;
            Some((port.clone(), host_port))
        })
        .collect();
    Ok(Machine {
        pid: u32::try_from(pid).context("its pid is out of range")?,
        addresses,
        gateways,
        published,
        removed_when_stopped: inspected
            .pointer("/HostConfig/AutoRemove")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// Percent-encodes everything but the unreserved characters of RFC 3986, for a query
/// value or a path segment.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_encoded_for_a_query() {
        assert_eq!(
            label_filter(&[("a.b", "c/d")]),
            "%7B%22label%22%3A%5B%22a.b%3Dc%2Fd%22%5D%7D"
        );
    }

    #[test]
    fn a_container_list_reads_ids_labels_and_state() {
        let body = r#"[{"Id":"abc","Labels":{"shipshape.node":"node-1","n":1},"State":"running"},
                       {"Id":"def","Labels":null,"State":"exited"}]"#;
        let containers = containers_of(body).expect("parses");
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0].id, "abc");
        assert!(containers[0].running);
        assert_eq!(
            containers[0]
                .labels
                .get("shipshape.node")
                .map(String::as_str),
            Some("node-1")
        );
        assert_eq!(containers[0].labels.len(), 1);
        assert!(!containers[1].running);
        assert!(containers[1].labels.is_empty());
        assert!(containers_of(r#"[{"Labels":{}}]"#).is_err());
        assert!(containers_of("not json").is_err());
    }

    #[test]
    fn a_network_lists_the_addresses_of_its_containers() {
        let network: Value = serde_json::from_str(
            r#"{"Name":"kind","Containers":{
                "a1":{"Name":"kind-control-plane","IPv4Address":"172.19.0.2/16"},
                "b2":{"Name":"kind-worker","IPv4Address":"172.19.0.3/16"},
                "c3":{"Name":"odd","IPv4Address":""}}}"#,
        )
        .expect("json");
        let mut addresses = addresses_on(&network);
        addresses.sort();
        assert_eq!(
            addresses,
            vec![
                std::net::IpAddr::from([172, 19, 0, 2]),
                std::net::IpAddr::from([172, 19, 0, 3])
            ]
        );
    }

    #[test]
    fn a_machine_reads_its_pid_addresses_gateways_and_published_ports() {
        let body = r#"{"State":{"Pid":4242},"NetworkSettings":{
            "Networks":{"shipshape":{"IPAddress":"172.18.0.7","Gateway":"172.18.0.1"},"none":{"IPAddress":""}},
            "Ports":{"6443/tcp":[{"HostIp":"127.0.0.1","HostPort":"39269"}],"2380/tcp":null}}}"#;
        let machine = machine_of(body).expect("parses");
        assert_eq!(machine.pid, 4242);
        assert_eq!(
            machine.addresses.get("shipshape"),
            Some(&std::net::IpAddr::from([172, 18, 0, 7]))
        );
        assert_eq!(machine.addresses.len(), 1);
        assert_eq!(
            machine.gateways.get("shipshape"),
            Some(&std::net::IpAddr::from([172, 18, 0, 1]))
        );
        assert_eq!(machine.published.get("6443/tcp"), Some(&39269));
        assert_eq!(machine.published.len(), 1);
        assert!(!machine.removed_when_stopped);
        assert!(machine_of(r#"{"State":{"Pid":0}}"#).is_err(), "not running");
        assert!(machine_of("not json").is_err());
    }
}
