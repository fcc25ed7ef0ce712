//! # The front door: one address for a control plane of several members
//!
//! A kubeconfig names one server, and the node agents know one apiserver URL. With three
//! members, that one address must keep answering when a member dies. Kubernetes clusters
//! put a load balancer in front of their apiservers for this; `shipshape up
//! --control-plane 3` runs this small one: it accepts TCP connections and passes each to a
//! member that accepts it, trying them in turn from a rotating start, so connections spread
//! over the members and a dead member is skipped. TLS goes through untouched: every
//! member's certificate is valid for the front door's loopback address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long connecting to one member may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Passes connections accepted on `listener` to `members` until `stopped` turns true.
pub async fn serve(
    listener: TcpListener,
    members: Vec<SocketAddr>,
    mut stopped: watch::Receiver<bool>,
) {
    let members = Arc::new(members);
    let next = Arc::new(AtomicUsize::new(0));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (client, remote) = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "the front door failed to accept a connection");
                    continue;
                }
            },
        };
        let _ = client.set_nodelay(true);
        let start = next.fetch_add(1, Ordering::Relaxed);
        let members = members.clone();
        connections.spawn(async move {
            let Some(mut member) = connect_any(&members, start).await else {
                tracing::warn!(%remote, "no control-plane member accepted a connection");
                return;
            };
            let mut client = client;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut member).await;
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

/// A connection to the first member, from `start` on, that accepts one.
async fn connect_any(members: &[SocketAddr], start: usize) -> Option<TcpStream> {
    for offset in 0..members.len() {
        let member = members[(start + offset) % members.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(member)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
            Ok(Err(e)) => tracing::debug!(%member, error = %e, "member refused a connection"),
            Err(_) => tracing::debug!(%member, "member did not accept a connection in time"),
        }
    }
    None
}
