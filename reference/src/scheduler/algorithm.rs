//! One scheduling decision, without I/O: filter every node, score the feasible ones, pick
//! the best — or explain, in upstream's words, why there is none.

use std::collections::BTreeMap;
use std::fmt;

use super::info::{NodeInfo, PodInfo};
use super::{filter, score};

/// Why a pod fits on no node: how many nodes there are and, per reason, on how many nodes
/// that reason stopped it (a node counts once for each reason its first failing filter
/// gave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// How many nodes were considered.
    pub nodes: usize,
    /// Reason → number of nodes it applies to.
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for FitError {
    /// Upstream's `FitError.Error()`: `0/3 nodes are available: 1 Insufficient memory, 2
    /// Insufficient cpu.` — each reason prefixed by its count, the *formatted* strings
    /// sorted, joined by ", ", ended by a period. With no nodes at all, upstream's
    /// `no nodes available to schedule pods`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return write!(f, "no nodes available to schedule pods");
        }
        let mut counted: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        counted.sort();
        let counted = counted.join(", ");
        write!(f, "0/{} nodes are available: {counted}.", self.nodes)
    }
}

impl std::error::Error for FitError {}

/// Picks a node for the pod among `nodes`, or says why none will do.
pub fn schedule<'a>(
    pod: &PodInfo,
    nodes: impl IntoIterator<Item = &'a NodeInfo>,
) -> Result<&'a NodeInfo, FitError> {
    let mut feasible = Vec::new();
    let mut failure = FitError {
        nodes: 0,
        reasons: BTreeMap::new(),
    };
    for node in nodes {
        failure.nodes += 1;
        match filter::run(pod, node) {
            Ok(()) => feasible.push(node),
            Err(reasons) => {
                for reason in reasons {
                    *failure.reasons.entry(reason).or_default() += 1;
                }
            }
        }
    }
    score::pick(pod, &feasible).ok_or(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::filter::tests::{info, node, on, pod};
    use serde_json::json;

    #[test]
    fn the_message_counts_nodes_per_reason_like_upstream() {
        let p = info(pod("big", "3", json!({})));
        let nodes = [
            on(node("a", json!({})), vec![]),
            on(node("b", json!({})), vec![]),
            on(node("c", json!({})), vec![]),
        ];
        let err = schedule(&p, &nodes).expect_err("fits nowhere");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 3 Insufficient cpu."
        );
    }

    #[test]
    fn reasons_are_sorted_as_formatted_and_nodes_count_under_their_first_failing_filter() {
        let p = info(pod(
            "p",
            "3",
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3", "memory": "8Gi"}}}], "nodeSelector": {"disk": "ssd"}}}),
        ));
        let nodes = [
            // Not ready and unlabelled: counted as not ready only.
            on(
                node(
                    "a",
                    json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                ),
                vec![],
            ),
            // Wrong labels.
            on(node("b", json!({})), vec![]),
            // Right labels, too small in both CPU and memory: both reasons.
            on(
                node("c", json!({"metadata": {"labels": {"disk": "ssd"}}})),
                vec![],
            ),
            on(
                node("d", json!({"metadata": {"labels": {"disk": "ssd"}}})),
                vec![],
            ),
            on(
                node(
                    "e",
                    json!({"spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}}),
                ),
                vec![],
            ),
        ];
        let err = schedule(&p, &nodes).expect_err("fits nowhere");
        assert_eq!(
            err.to_string(),
            "0/5 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint {gpu: yes}, 1 node(s) were not ready, \
             2 Insufficient cpu, 2 Insufficient memory."
        );
    }

    #[test]
    fn formatted_strings_sort_as_strings_as_upstream_does() {
        let err = FitError {
            nodes: 12,
            reasons: [
                ("Insufficient cpu".to_owned(), 2),
                ("Too many pods".to_owned(), 10),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(
            err.to_string(),
            "0/12 nodes are available: 10 Too many pods, 2 Insufficient cpu."
        );
    }

    #[test]
    fn no_nodes_at_all_says_so() {
        let p = info(pod("p", "1", json!({})));
        let err = schedule(&p, &[]).expect_err("no nodes");
        assert_eq!(err.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn the_best_feasible_node_wins() {
        let p = info(pod("p", "1", json!({})));
        let nodes = [
            on(node("a", json!({})), vec![pod("x", "1500m", json!({}))]),
            on(node("b", json!({})), vec![pod("y", "500m", json!({}))]),
            on(node("c", json!({"spec": {"unschedulable": true}})), vec![]),
        ];
        assert_eq!(schedule(&p, &nodes).map(NodeInfo::name), Ok("b"));
    }
}
