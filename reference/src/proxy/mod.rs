//! # The service proxy: the seed's kube-proxy
//!
//! "kube-proxy forwards traffic to the right pods and balances the load." For every port of
//! every NodePort (or LoadBalancer) Service, the proxy listens on the port's `nodePort` —
//! on loopback, and on each extra address it is given (the cluster network's gateway, so
//! pods reach Services too) — and forwards each TCP connection to one of the Service's
//! ready endpoints ([`balancer`]: round robin, or `ClientIP` session affinity). A connect
//! failure moves on to the next endpoint before the client sees an error.
//!
//! Endpoints that go away stop receiving *new* connections at once; connections already
//! forwarded to them are left to finish (drained, not cut). A listener whose Service is gone
//! stops accepting, and its open connections finish too.
//!
//! Everything comes from watches of Services and Endpoints: the proxy is an API client and
//! keeps no state of its own, but for what it counts of each backend's load ([`meter`]).

pub mod balancer;
pub mod meter;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use balancer::Balancer;
use meter::Meter;

/// How long a backend has to accept a connection before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One Service port the proxy serves: `namespace/name:port-name`.
type PortKey = String;

/// The balancers, shared by the listeners and the watch loop. A std `Mutex`: it is held for
/// a lookup, never across an `.await`.
type Table = Arc<Mutex<HashMap<PortKey, Balancer>>>;

/// The balancers, even if a thread panicked holding them.
fn balancers(table: &Table) -> MutexGuard<'_, HashMap<PortKey, Balancer>> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the proxy until `shutdown` turns true, listening on loopback and `extra_addresses`,
/// counting what it forwards in `meter`.
pub async fn run(
    client: kube::Client,
    extra_addresses: Vec<IpAddr>,
    meter: Meter,
    mut shutdown: watch::Receiver<bool>,
) {
    let (services, services_writer) = reflector::store::<Service>();
    let (endpoints, endpoints_writer) = reflector::store::<Endpoints>();
    let svc_stream = reflector(
        services_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ())
    .boxed();
    let ep_stream = reflector(
        endpoints_writer,
        watcher(Api::<Endpoints>::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ())
    .boxed();
    let mut changes = futures::stream::select(svc_stream, ep_stream);
    let table: Table = Arc::default();
    let mut listeners: HashMap<(IpAddr, u16), (PortKey, watch::Sender<bool>)> = HashMap::new();
    let mut addresses: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    addresses.extend(extra_addresses);
    let mut resync = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = crate::agent::stopped(&mut shutdown) => break,
            _ = resync.tick() => {}
            change = changes.next() => if change.is_none() { break },
        }
        let desired = desired_ports(&services.state(), &endpoints.state());
        {
            let mut t = balancers(&table);
            t.retain(|k, _| desired.values().any(|d| &d.key == k));
            for d in desired.values() {
                t.entry(d.key.clone())
                    .or_default()
                    .set(d.backends.clone(), d.affinity);
            }
        }
        // Listeners: open the new, close those whose port went away or changed hands (a
        // listener stops once its sender is dropped).
        listeners.retain(|(_, port), (key, _)| desired.get(port).is_some_and(|d| &d.key == key));
        for (port, d) in &desired {
            for ip in &addresses {
                if listeners.contains_key(&(*ip, *port)) {
                    continue;
                }
                match TcpListener::bind(SocketAddr::new(*ip, *port)).await {
                    Ok(listener) => {
                        tracing::info!(service = %d.key, address = %ip, port, "proxy listening");
                        let (stop, stopped) = watch::channel(false);
                        let key = d.key.clone();
                        let (table, meter) = (table.clone(), meter.clone());
                        tokio::spawn(serve(listener, key, table, meter, stopped));
                        listeners.insert((*ip, *port), (d.key.clone(), stop));
                    }
                    Err(e) => {
                        tracing::warn!(service = %d.key, address = %ip, port, error = %e, "proxy cannot listen");
                    }
                }
            }
        }
    }
    // Dropping `listeners` stops every listener.
}

/// What the proxy should serve on one node port.
#[derive(Debug, Clone, PartialEq)]
struct Desired {
    key: PortKey,
    backends: Vec<SocketAddr>,
    affinity: Option<Duration>,
}

/// Node port → what to serve there, from the Services and Endpoints.
fn desired_ports(
    services: &[Arc<Service>],
    endpoints: &[Arc<Endpoints>],
) -> BTreeMap<u16, Desired> {
    let mut out = BTreeMap::new();
    for svc in services {
        let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let Some(spec) = &svc.spec else { continue };
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let secs = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(10800);
            Duration::from_secs(u64::try_from(secs).unwrap_or(10800))
        });
        let ep = endpoints.iter().find(|e| {
            e.metadata.namespace.as_deref() == Some(ns) && e.metadata.name.as_deref() == Some(name)
        });
        for port in spec.ports.iter().flatten() {
            let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let port_name = port.name.clone().unwrap_or_default();
            let backends: Vec<SocketAddr> = ep
                .and_then(|e| e.subsets.as_ref())
                .into_iter()
                .flatten()
                .flat_map(|subset| {
                    let target = subset
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.clone().unwrap_or_default() == port_name)
                        .and_then(|p| u16::try_from(p.port).ok());
                    subset
                        .addresses
                        .iter()
                        .flatten()
                        .filter_map(move |a| Some(SocketAddr::new(a.ip.parse().ok()?, target?)))
                })
                .collect();
            out.insert(
                node_port,
                Desired {
                    key: format!("{ns}/{name}:{port_name}"),
                    backends,
                    affinity,
                },
            );
        }
    }
    out
}

/// Accepts connections for one Service port until told to stop.
async fn serve(
    listener: TcpListener,
    key: PortKey,
    table: Table,
    meter: Meter,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let (client, peer) = tokio::select! {
            _ = crate::agent::stopped(&mut stopped) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let (table, key, meter) = (table.clone(), key.clone(), meter.clone());
        // A forwarded connection lives on its own: closing the listener does not cut it.
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            forward(client, peer, &key, &table, &meter).await;
        });
    }
}

async fn forward(mut client: TcpStream, peer: SocketAddr, key: &str, table: &Table, meter: &Meter) {
    let order = balancers(table)
        .get_mut(key)
        .map(|b| b.order(peer.ip(), Instant::now()));
    for backend in order.into_iter().flatten() {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await;
        if let Ok(Ok(mut upstream)) = connected {
            let _ = upstream.set_nodelay(true);
            if let Some(b) = balancers(table).get_mut(key) {
                b.used(peer.ip(), backend, Instant::now());
            }
            let _in_flight = meter.opened(backend.ip(), Instant::now());
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            return;
        }
        tracing::debug!(service = key, %backend, "backend refused; trying the next");
    }
    tracing::debug!(service = key, "no backend could take the connection");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_ports_map_to_ready_endpoint_addresses() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
        }))
        .expect("service");
        let ep: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                         "notReadyAddresses": [{"ip": "10.0.0.3"}],
                         "ports": [{"port": 8080, "protocol": "TCP"}]}],
        }))
        .expect("endpoints");
        let d = desired_ports(&[Arc::new(svc)], &[Arc::new(ep)]);
        let web = d.get(&30080).expect("served");
        assert_eq!(web.key, "default/web:");
        assert_eq!(
            web.backends,
            vec![
                SocketAddr::from(([10, 0, 0, 1], 8080)),
                SocketAddr::from(([10, 0, 0, 2], 8080))
            ]
        );
    }
}
