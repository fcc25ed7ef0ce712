//! # The front door: one address for a control plane of several members
//!
//! A kubeconfig names one server, and the node agents know one apiserver URL. With three
//! members, that one address must keep answering when a member dies. Kubernetes clusters
//! put a load balancer in front of their apiservers for this, one that checks each
//! apiserver's `/readyz`; `shipshape up --control-plane 3` runs this small one. It accepts
//! TCP connections and passes each to a member, trying them in turn from a rotating start,
//! so connections spread over the members: first those whose `/readyz` answered 200 at the
//! last look ([`check_readiness`], every [`READY_EVERY`]), then — when none did, as while
//! the members elect a leader — the others, so a dead member is skipped and a member that
//! cannot serve (its disk full, cut off from the majority) is passed over. TLS goes
//! through untouched: every member's certificate is valid for the front door's loopback
//! address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::client::Credentials;

/// How long connecting to one member may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often each member's `/readyz` is asked.
pub const READY_EVERY: Duration = Duration::from_millis(500);

/// One member behind the front door.
#[derive(Debug)]
pub struct Backend {
    /// Where its API listens.
    pub addr: SocketAddr,
    /// Whether its `/readyz` answered 200 at the last look.
    ready: AtomicBool,
}

impl Backend {
    /// A member at `addr`, taken for ready until a look says otherwise.
    pub fn new(addr: SocketAddr) -> Backend {
        Backend {
            addr,
            ready: AtomicBool::new(true),
        }
    }

    /// Whether its `/readyz` answered 200 at the last look.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records what the last look at its `/readyz` said.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// The members behind a front door, shared by its listeners and its readiness checks.
pub type Backends = Arc<[Backend]>;

/// Passes connections accepted on `listener` to `members` until `stopped` turns true.
pub async fn serve(listener: TcpListener, members: Backends, mut stopped: watch::Receiver<bool>) {
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

/// A connection to the first member, from `start` on, that accepts one: a ready member
/// if any does, else any member.
async fn connect_any(members: &[Backend], start: usize) -> Option<TcpStream> {
    let order = (0..members.len()).map(|offset| &members[(start + offset) % members.len()]);
    let (ready, unready): (Vec<&Backend>, Vec<&Backend>) = order.partition(|m| m.is_ready());
    for member in ready.into_iter().chain(unready) {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(member.addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
            Ok(Err(e)) => {
                tracing::debug!(member = %member.addr, error = %e, "member refused a connection")
            }
            Err(_) => {
                tracing::debug!(member = %member.addr, "member did not accept a connection in time")
            }
        }
    }
    None
}

/// Asks every member's `/readyz` every [`READY_EVERY`] until `stopped` turns true, and
/// records the answers in `members`. `credentials` are the cluster's (the server in them
/// is replaced by each member's address).
pub async fn check_readiness(
    members: Backends,
    credentials: Credentials,
    mut stopped: watch::Receiver<bool>,
) {
    let clients: Vec<Option<kube::Client>> = members
        .iter()
        .map(|member| {
            let credentials = Credentials {
                server: format!("https://{}", member.addr),
                ..credentials.clone()
            };
            credentials
                .client_without_retries()
                .inspect_err(|e| tracing::warn!(member = %member.addr, error = %e, "cannot check a member's readiness"))
                .ok()
        })
        .collect();
    loop {
        let looks = members.iter().zip(&clients).map(|(member, client)| async move {
            let ready = match client {
                Some(client) => is_ready(client).await,
                None => true,
            };
            if ready != member.is_ready() {
                tracing::info!(member = %member.addr, ready, "a control-plane member's readiness changed");
            }
            member.set_ready(ready);
        });
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = futures::future::join_all(looks) => {}
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(READY_EVERY) => {}
        }
    }
}

/// Whether `/readyz` answers 200 within a second.
async fn is_ready(client: &kube::Client) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    let asked = tokio::time::timeout(Duration::from_secs(1), client.send(request.map(Into::into)));
    matches!(asked.await, Ok(Ok(response)) if response.status().is_success())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the connections `listener` accepts, keeping them open.
    async fn count_accepts(listener: TcpListener) -> Arc<AtomicUsize> {
        let count = Arc::new(AtomicUsize::new(0));
        let counting = count.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counting.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        count
    }

    #[tokio::test]
    async fn connections_go_to_ready_members_and_to_any_when_none_is() {
        let (first, second) = (
            TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        );
        let members: Backends = Arc::new([
            Backend::new(first.local_addr().expect("address")),
            Backend::new(second.local_addr().expect("address")),
        ]);
        let (to_first, to_second) = (count_accepts(first).await, count_accepts(second).await);
        let door = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let door_addr = door.local_addr().expect("address");
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(serve(door, members.clone(), stopped));
        let mut clients = Vec::new();
        let connect = |n: usize| async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(TcpStream::connect(door_addr).await.expect("connect"));
            }
            out
        };
        let settle = || tokio::time::sleep(Duration::from_millis(200));

        // The first member accepts connections but is not ready: it gets none of them.
        members[0].set_ready(false);
        clients.extend(connect(6).await);
        settle().await;
        assert_eq!(to_first.load(Ordering::SeqCst), 0);
        assert_eq!(to_second.load(Ordering::SeqCst), 6);

        // Neither is ready (an election, say): both take connections.
        members[1].set_ready(false);
        clients.extend(connect(6).await);
        settle().await;
        assert_eq!(to_first.load(Ordering::SeqCst), 3);
        assert_eq!(to_second.load(Ordering::SeqCst), 9);
        drop(clients);
    }
}
