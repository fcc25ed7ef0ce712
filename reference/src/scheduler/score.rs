//! The priorities: score plugins that rank the nodes that passed every filter.
//!
//! Each plugin gives every feasible node a score from 0 to [`MAX_NODE_SCORE`]; the node's
//! total is the weighted sum over [`SCORES`], and the highest total wins. **Ties go to the
//! node whose name sorts first** — deterministic, so that placements can be predicted by a
//! reader and asserted by a test. (Upstream picks at random among tied nodes; with the two
//! plugins below, ties only happen between nodes that are truly alike.)
//!
//! - *Least allocated* (upstream `NodeResourcesFit` with the `LeastAllocated` strategy,
//!   weight 1): the fraction of CPU and of memory still free once the pod is placed,
//!   averaged. Requests are counted as scoring counts them (a container without requests
//!   weighs 100m and 200Mi), so pods that request nothing still spread out.
//! - *Owner spread* (upstream's `SelectorSpread`, whose job `PodTopologySpread` took over,
//!   weight 2 as upstream gives it): fewer pods of the same controller on a node — the same
//!   ReplicaSet, found through the `controller: true` ownerReference uid — score higher,
//!   so a deployment's replicas land on different machines and losing one machine loses
//!   few of them.

use super::info::{NodeInfo, PodInfo, controller_uid, is_terminated};

/// The highest score a plugin gives a node.
pub const MAX_NODE_SCORE: i64 = 100;

/// A score plugin: one score in `0..=MAX_NODE_SCORE` per node, in the order given.
pub type Score = fn(&PodInfo, &[&NodeInfo]) -> Vec<i64>;

/// The score plugins, by name, with their weights.
pub const SCORES: &[(&str, Score, i64)] = &[
    ("NodeResourcesLeastAllocated", least_allocated, 1),
    ("OwnerSpread", owner_spread, 2),
];

/// The weighted total of every plugin's score, per node, in the order given.
pub fn totals(pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let mut totals = vec![0; nodes.len()];
    for (name, plugin, weight) in SCORES {
        if *name == "OwnerSpread" && crate::failpoints::on!("scheduler::no-spreading") {
            continue;
        }
        for (total, score) in totals.iter_mut().zip(plugin(pod, nodes)) {
            *total += weight * score;
        }
    }
    totals
}

/// The best node for the pod among `nodes` (all feasible): the highest total, ties to the
/// name that sorts first. `None` only if `nodes` is empty.
pub fn pick<'a>(pod: &PodInfo, nodes: &[&'a NodeInfo]) -> Option<&'a NodeInfo> {
    let totals = totals(pod, nodes);
    nodes
        .iter()
        .zip(totals)
        .max_by(|(a, sa), (b, sb)| sa.cmp(sb).then_with(|| b.name().cmp(a.name())))
        .map(|(n, _)| *n)
}

/// How free each node stays once the pod is on it: for CPU and memory,
/// `(allocatable − requested) × 100 / allocatable` (0 if nothing is offered or it would
/// be overcommitted), averaged.
pub fn least_allocated(pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let free = |requested: i64, offered: i64| {
        if offered <= 0 || requested > offered {
            0
        } else {
            // i128: 100 × a large memory size would overflow i64.
            let score =
                i128::from(offered - requested) * i128::from(MAX_NODE_SCORE) / i128::from(offered);
            i64::try_from(score).unwrap_or(0)
        }
    };
    nodes
        .iter()
        .map(|n| {
            let want = &pod.scoring_requests;
            let used = &n.scoring_requested;
            let cpu = free(
                used.milli_cpu.saturating_add(want.milli_cpu),
                n.allocatable.milli_cpu,
            );
            let memory = free(
                used.memory.saturating_add(want.memory),
                n.allocatable.memory,
            );
            (cpu + memory) / 2
        })
        .collect()
}

/// Spreads a controller's pods: with `count` its pods on a node and `max` the most on any
/// of the nodes, `100 × (max − count) / max`; every node scores 100 if none has any (or
/// the pod has no controller).
pub fn owner_spread(pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let Some(owner) = controller_uid(&pod.pod.metadata) else {
        return vec![MAX_NODE_SCORE; nodes.len()];
    };
    let namespace = pod.pod.metadata.namespace.as_deref();
    let counts: Vec<i64> = nodes
        .iter()
        .map(|n| {
            let same = n.pods.iter().filter(|p| {
                p.metadata.namespace.as_deref() == namespace
                    && controller_uid(&p.metadata) == Some(owner)
                    && !is_terminated(p)
            });
            i64::try_from(same.count()).unwrap_or(i64::MAX)
        })
        .collect();
    let max = counts.iter().copied().max().unwrap_or(0);
    if max == 0 {
        return vec![MAX_NODE_SCORE; nodes.len()];
    }
    let spread = counts
        .into_iter()
        .map(|count| MAX_NODE_SCORE * (max - count) / max);
    spread.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::filter::tests::{info, node, on, pod};
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn replica(name: &str, owner: &str) -> k8s_openapi::api::core::v1::Pod {
        pod(
            name,
            "100m",
            json!({"metadata": {"ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                "uid": owner, "controller": true,
            }]}}),
        )
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let p = info(pod("p", "500m", json!({})));
        let empty = on(node("a", json!({})), vec![]);
        let busy = on(node("b", json!({})), vec![pod("x", "1", json!({}))]);
        let scores = least_allocated(&p, &[&empty, &busy]);
        // cpu: (2000 − 500) / 2000 = 75 and (2000 − 1500) / 2000 = 25; memory: 200Mi of
        // 4Gi (95) and 400Mi of 4Gi (90).
        assert_eq!(scores, vec![(75 + 95) / 2, (25 + 90) / 2]);
        let tiny = on(
            node(
                "c",
                json!({"status": {"allocatable": {"cpu": "100m", "memory": "0"}}}),
            ),
            vec![],
        );
        assert_eq!(least_allocated(&p, &[&tiny]), vec![0]);
    }

    #[test]
    fn owner_spread_prefers_nodes_with_fewer_of_the_same_owner() {
        let p = info(replica("new", "rs-1"));
        let a = on(
            node("a", json!({})),
            vec![replica("r1", "rs-1"), replica("r2", "rs-1")],
        );
        let b = on(
            node("b", json!({})),
            vec![replica("r3", "rs-1"), replica("o1", "rs-2")],
        );
        let c = on(
            node("c", json!({})),
            vec![replica("o2", "rs-2"), replica("o3", "rs-2")],
        );
        assert_eq!(owner_spread(&p, &[&a, &b, &c]), vec![0, 50, 100]);
        // Pods without a controller are indifferent to spreading.
        let lone = info(pod("lone", "100m", json!({})));
        assert_eq!(owner_spread(&lone, &[&a, &b, &c]), vec![100, 100, 100]);
    }

    #[test]
    fn six_replicas_on_three_equal_nodes_land_two_two_two() {
        let mut nodes: BTreeMap<String, NodeInfo> = ["node-a", "node-b", "node-c"]
            .into_iter()
            .map(|n| (n.to_owned(), on(node(n, json!({})), vec![])))
            .collect();
        let mut placed = Vec::new();
        for i in 0..6 {
            let p = Arc::new(replica(&format!("web-{i}"), "rs-1"));
            let pi = PodInfo::new(p.clone()).expect("pod info");
            let feasible: Vec<&NodeInfo> = nodes.values().collect();
            let name = pick(&pi, &feasible).expect("a node").name().to_owned();
            nodes.get_mut(&name).expect("known node").add_pod(p);
            placed.push(name);
        }
        assert_eq!(
            placed,
            ["node-a", "node-b", "node-c", "node-a", "node-b", "node-c"]
        );
    }

    #[test]
    fn ties_go_to_the_name_that_sorts_first() {
        let p = info(pod("p", "100m", json!({})));
        let b = on(node("b", json!({})), vec![]);
        let a = on(node("a", json!({})), vec![]);
        let c = on(node("c", json!({})), vec![]);
        assert_eq!(pick(&p, &[&b, &c, &a]).map(NodeInfo::name), Some("a"));
        assert!(pick(&p, &[]).is_none());
    }

    #[test]
    fn spreading_outweighs_a_small_difference_in_load() {
        // Node a has one unrelated pod, node b holds one replica of the owner: the next
        // replica goes to a.
        let p = info(replica("new", "rs-1"));
        let a = on(node("a", json!({})), vec![pod("other", "200m", json!({}))]);
        let b = on(node("b", json!({})), vec![replica("r1", "rs-1")]);
        assert_eq!(pick(&p, &[&a, &b]).map(NodeInfo::name), Some("a"));
    }
}
