//! Cluster IPs and node ports: values only one Service may hold at a time.
//!
//! Every Service (but a headless or ExternalName one) gets a cluster IP from the service
//! range, and every port of a NodePort (or LoadBalancer) Service gets a node port from the
//! node port range — 30000–32767 unless the control plane was started with another
//! (`--service-node-port-range`, as upstream's apiserver takes it) — the one it asks for if
//! it is free and in the range (else 422 Invalid), or a free one picked at random. Uniqueness is the store's job, not a lock's: each value held is a key
//! (`/registry/allocations/nodeports/30080`) written with the Service in one atomic write,
//! with the precondition "absent". Two creates racing for one port cannot both succeed, and
//! a delete releases the keys in the same write that removes the Service.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use rand::Rng;
use serde_json::{Value, json};

use crate::api::meta;
use crate::api::validate::{Cause, ValidationError};
use crate::store::{Op, Precondition, Store, StoreError};

/// The node port range upstream's apiserver uses unless told otherwise.
pub const NODE_PORTS: RangeInclusive<u16> = 30000..=32767;
/// The service IP range: 10.96.0.0/16. Picked at random from 10.96.0.2 up: 10.96.0.1 is
/// the `kubernetes` Service's, as in Kubernetes (`crate::control_plane` writes it).
const SERVICE_NET: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SERVICE_NET_SIZE: u32 = 1 << 16;

const PORT_PREFIX: &str = "/registry/allocations/nodeports/";
const IP_PREFIX: &str = "/registry/allocations/clusterips/";

/// Who holds which values now: value → the holding Service's store key.
#[derive(Debug, Default)]
pub struct Held {
    ports: BTreeMap<u16, String>,
    ips: BTreeMap<Ipv4Addr, String>,
}

impl Held {
    /// Reads the allocation keys from the store.
    pub fn load(store: &Store) -> Result<Held, StoreError> {
        let mut held = Held::default();
        let (items, _) = store.list("/registry/allocations/")?;
        for (key, record) in items {
            let owner = String::from_utf8_lossy(&record.value).into_owned();
            if let Some(p) = key.strip_prefix(PORT_PREFIX).and_then(|p| p.parse().ok()) {
                held.ports.insert(p, owner);
            } else if let Some(ip) = key.strip_prefix(IP_PREFIX).and_then(|p| p.parse().ok()) {
                held.ips.insert(ip, owner);
            }
        }
        Ok(held)
    }
}

/// A 422 Invalid for `field` of the Service `name`.
fn invalid(name: &str, field: &str, message: impl Into<String>) -> ValidationError {
    ValidationError::Invalid {
        kind: "Service",
        name: name.to_owned(),
        causes: vec![Cause {
            reason: "FieldValueInvalid",
            field: field.to_owned(),
            message: message.into(),
        }],
    }
}

fn in_range(ip: Ipv4Addr) -> bool {
    let n = u32::from(ip);
    n > SERVICE_NET && n < SERVICE_NET + SERVICE_NET_SIZE - 1
}

fn claim(key: String, owner: &str) -> Op {
    Op::put(key, owner.as_bytes().to_vec(), Precondition::Absent)
}

/// A Service port's `port` and `protocol`: which port of the old Service it is.
fn port_of(p: &Value) -> (i64, String) {
    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
    let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
    (port, protocol.to_owned())
}

/// Fills in the cluster IP and node ports of `svc` (being created, or updated from `old`)
/// and returns the store ops that claim what is new and release what is no longer held.
pub fn plan(
    svc: &mut Value,
    old: Option<&Value>,
    held: &Held,
    owner: &str,
    name: &str,
    node_ports: &RangeInclusive<u16>,
) -> Result<Vec<Op>, ValidationError> {
    let mut ops = Vec::new();
    let ty = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    let mut rng = rand::thread_rng();

    // The cluster IP: immutable once given.
    let cluster_ip = |obj: &Value| obj.pointer("/spec/clusterIP")?.as_str().map(str::to_owned);
    let asked = cluster_ip(svc).filter(|s| !s.is_empty());
    let field = "spec.clusterIP";
    let bad_ip = |a: &str, why| invalid(name, field, format!("Invalid value: \"{a}\": {why}"));
    let ip = match (ty.as_str(), asked, old.and_then(cluster_ip)) {
        ("ExternalName", _, _) => None,
        (_, Some(a), Some(o)) if a != o => return Err(bad_ip(&a, "field is immutable")),
        (_, _, Some(o)) => Some(o),
        (_, Some(a), None) if a == "None" => Some(a),
        (_, Some(a), None) => {
            let parsed: Ipv4Addr = a
                .parse()
                .map_err(|_| bad_ip(&a, "must be a valid IP address"))?;
            if !in_range(parsed) {
                return Err(bad_ip(
                    &a,
                    "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16",
                ));
            }
            if held.ips.contains_key(&parsed) {
                return Err(bad_ip(&a, "provided IP is already allocated"));
            }
            ops.push(claim(format!("{IP_PREFIX}{parsed}"), owner));
            Some(a)
        }
        (_, None, None) => {
            let free = (0..1000)
                .map(|_| Ipv4Addr::from(SERVICE_NET + rng.gen_range(2..SERVICE_NET_SIZE - 1)))
                .find(|ip| !held.ips.contains_key(ip))
                .ok_or_else(|| invalid(name, field, "no cluster IP is free"))?;
            ops.push(claim(format!("{IP_PREFIX}{free}"), owner));
            Some(free.to_string())
        }
    };
    if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
        match &ip {
            Some(ip) => {
                spec.insert("clusterIP".into(), json!(ip));
                spec.insert("clusterIPs".into(), json!([ip]));
                spec.insert("ipFamilies".into(), json!(["IPv4"]));
                spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
            }
            None => {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
        }
    }

    // Node ports: the one asked for, else the one the same port had before, else a free one.
    let wants_ports = ty == "NodePort" || ty == "LoadBalancer";
    let old_ports: Vec<((i64, String), u16)> = old
        .into_iter()
        .flat_map(|o| meta::each(o, "/spec/ports"))
        .filter_map(|p| Some((port_of(p), u16::try_from(p["nodePort"].as_u64()?).ok()?)))
        .collect();
    let mut kept = Vec::new();
    let ports = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut);
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let (port, asked) = (port_of(p), p.get("nodePort").and_then(Value::as_i64));
        let Some(p) = p.as_object_mut() else { continue };
        let field = format!("spec.ports[{i}].nodePort");
        let previous = old_ports.iter().find(|(o, _)| *o == port).map(|(_, n)| *n);
        let chosen = match asked.filter(|n| *n != 0) {
            Some(_) if !wants_ports => {
                let why = format!("Forbidden: may not be used when `type` is '{ty}'");
                return Err(invalid(name, &field, why));
            }
            None if !wants_ports => continue,
            Some(n) => {
                let n = u16::try_from(n).ok().filter(|n| node_ports.contains(n)).ok_or_else(|| {
                    invalid(name, &field, format!("Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}", node_ports.start(), node_ports.end()))
                })?;
                let ours = held.ports.get(&n).is_some_and(|o| o == owner);
                if kept.contains(&n) {
                    return Err(invalid(name, &field, format!("Duplicate value: {n}")));
                }
                if held.ports.contains_key(&n) && !ours {
                    let why = format!("Invalid value: {n}: provided port is already allocated");
                    return Err(invalid(name, &field, why));
                }
                if !ours {
                    ops.push(claim(format!("{PORT_PREFIX}{n}"), owner));
                }
                n
            }
            None => match previous {
                Some(n) if !kept.contains(&n) => n,
                _ => {
                    let free = (0..2000)
                        .map(|_| rng.gen_range(node_ports.clone()))
                        .find(|n| !held.ports.contains_key(n) && !kept.contains(n))
                        .ok_or_else(|| invalid(name, &field, "no node port is free"))?;
                    ops.push(claim(format!("{PORT_PREFIX}{free}"), owner));
                    free
                }
            },
        };
        kept.push(chosen);
        p.insert("nodePort".into(), json!(chosen));
    }
    // Release what this Service held and no longer does.
    let keeps = |key: &str| {
        kept.iter().any(|p| key == format!("{PORT_PREFIX}{p}"))
            || ip
                .as_ref()
                .is_some_and(|ip| key == format!("{IP_PREFIX}{ip}"))
    };
    ops.extend(
        release(held, owner)
            .into_iter()
            .filter(|op| !keeps(&op.key)),
    );
    Ok(ops)
}

/// The ops that release everything the Service with store key `owner` holds.
pub fn release(held: &Held, owner: &str) -> Vec<Op> {
    let ports = held
        .ports
        .iter()
        .map(|(p, o)| (format!("{PORT_PREFIX}{p}"), o));
    let ips = held
        .ips
        .iter()
        .map(|(ip, o)| (format!("{IP_PREFIX}{ip}"), o));
    ports
        .chain(ips)
        .filter(|(_, o)| *o == owner)
        .map(|(key, _)| Op::delete(key, Precondition::Exists))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ty: &str, node_port: Option<i64>) -> Value {
        let mut port = json!({"port": 80, "protocol": "TCP", "targetPort": 8080});
        if let Some(np) = node_port {
            port["nodePort"] = json!(np);
        }
        json!({"spec": {"type": ty, "ports": [port]}})
    }

    #[test]
    fn a_node_port_service_gets_an_ip_and_a_port() {
        let mut s = svc("NodePort", None);
        let ops = plan(
            &mut s,
            None,
            &Held::default(),
            "/registry/services/default/web",
            "web",
            &NODE_PORTS,
        )
        .expect("plans");
        let np = s["spec"]["ports"][0]["nodePort"].as_i64().expect("port");
        assert!((30000..=32767).contains(&np));
        let ip: Ipv4Addr = s["spec"]["clusterIP"]
            .as_str()
            .expect("ip")
            .parse()
            .expect("parses");
        assert!(in_range(ip));
        assert_eq!(ops.len(), 2, "claims an IP and a port: {ops:?}");
        assert!(ops.iter().all(|o| o.precondition == Precondition::Absent));
    }

    #[test]
    fn a_taken_port_is_invalid_and_an_update_keeps_what_it_had() {
        let mut held = Held::default();
        held.ports
            .insert(30080, "/registry/services/default/other".into());
        let mut s = svc("NodePort", Some(30080));
        let err = plan(
            &mut s,
            None,
            &held,
            "/registry/services/default/web",
            "web",
            &NODE_PORTS,
        )
        .expect_err("taken");
        assert!(err.to_string().contains("already allocated"), "{err}");

        let owner = "/registry/services/default/web";
        let mut first = svc("NodePort", Some(30081));
        let ops = plan(&mut first, None, &held, owner, "web", &NODE_PORTS).expect("plans");
        held.ports.insert(30081, owner.into());
        let ip: Ipv4Addr = first["spec"]["clusterIP"]
            .as_str()
            .expect("ip")
            .parse()
            .expect("ip");
        held.ips.insert(ip, owner.into());
        assert_eq!(ops.len(), 2);
        // An update that leaves the node port out keeps it, and claims nothing new.
        let mut update = svc("NodePort", None);
        let ops = plan(&mut update, Some(&first), &held, owner, "web", &NODE_PORTS).expect("plans");
        assert_eq!(update["spec"]["ports"][0]["nodePort"], 30081);
        assert!(ops.is_empty(), "{ops:?}");
        // Turning it into a ClusterIP service releases the port.
        let mut back = svc("ClusterIP", None);
        let ops = plan(&mut back, Some(&first), &held, owner, "web", &NODE_PORTS).expect("plans");
        assert_eq!(ops.len(), 1);
        assert!(ops[0].value.is_none());
        assert_eq!(release(&held, owner).len(), 2);
    }

    #[test]
    fn node_ports_come_from_the_configured_range() {
        let range = 31000..=31009;
        for _ in 0..20 {
            let mut s = svc("NodePort", None);
            plan(&mut s, None, &Held::default(), "k", "web", &range).expect("plans");
            let np = s["spec"]["ports"][0]["nodePort"].as_i64().expect("port");
            assert!((31000..=31009).contains(&np), "{np}");
        }
        let mut outside = svc("NodePort", Some(30080));
        let err = plan(&mut outside, None, &Held::default(), "k", "web", &range)
            .expect_err("outside the range");
        assert!(
            err.to_string()
                .contains("The range of valid ports is 31000-31009"),
            "{err}"
        );
    }

    #[test]
    fn the_cluster_ip_is_immutable() {
        let old = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": []}});
        let mut new =
            json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.11", "ports": []}});
        assert!(
            plan(
                &mut new,
                Some(&old),
                &Held::default(),
                "k",
                "web",
                &NODE_PORTS
            )
            .is_err()
        );
        let mut headless = json!({"spec": {"clusterIP": "None", "ports": []}});
        assert!(
            plan(&mut headless, None, &Held::default(), "k", "h", &NODE_PORTS)
                .expect("plans")
                .is_empty()
        );
    }
}
