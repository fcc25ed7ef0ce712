//! Which backend gets the next connection: round robin over the ready endpoints, or the
//! same backend as last time for the same client when the Service asks for `ClientIP`
//! session affinity.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The backends of one Service port, and where the rotation stands.
#[derive(Debug, Default)]
pub struct Balancer {
    backends: Vec<SocketAddr>,
    next: usize,
    /// `Some(timeout)` for ClientIP affinity.
    affinity: Option<Duration>,
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
}

impl Balancer {
    /// Replaces the backends (keeping the rotation's place and still-valid affinities).
    pub fn set(&mut self, mut backends: Vec<SocketAddr>, affinity: Option<Duration>) {
        backends.sort();
        backends.dedup();
        self.sticky.retain(|_, (b, _)| backends.contains(b));
        if affinity.is_none() {
            self.sticky.clear();
        }
        self.backends = backends;
        self.affinity = affinity;
    }

    /// Whether there is any backend.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The order in which to try backends for a connection from `client`: the preferred one
    /// first, then the others (a connect failure moves on to the next).
    pub fn order(&mut self, client: IpAddr, now: Instant) -> Vec<SocketAddr> {
        let n = self.backends.len();
        if n == 0 {
            return Vec::new();
        }
        if let Some(timeout) = self.affinity
            && let Some((b, since)) = self.sticky.get(&client).copied()
            && now.duration_since(since) < timeout
            && self.backends.contains(&b)
        {
            self.sticky.insert(client, (b, now));
            let mut order = vec![b];
            order.extend(self.backends.iter().copied().filter(|x| *x != b));
            return order;
        }
        let start = self.next % n;
        if !crate::failpoints::on!("proxy::no-round-robin") {
            self.next = (start + 1) % n;
        }
        let order: Vec<SocketAddr> = (0..n).map(|i| self.backends[(start + i) % n]).collect();
        if self.affinity.is_some() {
            self.sticky.insert(client, (order[0], now));
        }
        order
    }

    /// Records which backend a client actually got (after failovers), for affinity.
    pub fn used(&mut self, client: IpAddr, backend: SocketAddr, now: Instant) {
        if self.affinity.is_some() {
            self.sticky.insert(client, (backend, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 8080))
    }

    #[test]
    fn round_robin_visits_every_backend_in_turn() {
        let mut b = Balancer::default();
        b.set(vec![addr(3), addr(1), addr(2)], None);
        let client: IpAddr = [127, 0, 0, 1].into();
        let now = Instant::now();
        let firsts: Vec<SocketAddr> = (0..6).map(|_| b.order(client, now)[0]).collect();
        assert_eq!(
            firsts,
            [addr(1), addr(2), addr(3), addr(1), addr(2), addr(3)]
        );
        // Each order also lists the others, for failover.
        assert_eq!(b.order(client, now).len(), 3);
    }

    #[test]
    fn client_ip_affinity_sticks_until_it_expires_or_the_backend_goes() {
        let mut b = Balancer::default();
        b.set(vec![addr(1), addr(2)], Some(Duration::from_secs(10)));
        let (c1, c2): (IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        let t = Instant::now();
        let first = b.order(c1, t)[0];
        assert_eq!(b.order(c1, t)[0], first);
        assert_eq!(b.order(c1, t + Duration::from_secs(5))[0], first);
        let _ = b.order(c2, t);
        // Expired: back to the rotation.
        let _ = b.order(c1, t + Duration::from_secs(30));
        // Its backend removed: another one.
        b.set(vec![addr(3)], Some(Duration::from_secs(10)));
        assert_eq!(b.order(c1, t)[0], addr(3));
    }
}
