//! What the node's pods use now: the agent's `GET /stats/summary`, from which the
//! apiserver serves `metrics.k8s.io` (`kubectl top`).
//!
//! For every running container of this node's pods (the pause sandboxes aside), Docker's
//! stats: CPU as the share of the machine's time the container took between two samples
//! Docker takes a second apart, in billionths of a CPU (`nanocores`); memory as the
//! working set — what the container uses less the file cache the kernel may reclaim —
//! which is what Kubernetes reports and evicts on. The answer:
//!
//! ```json
//! {"window": "1s", "pods": [{"namespace": "default", "name": "web-1",
//!   "containers": [{"name": "probe", "cpuNanoCores": 1200000, "memoryBytes": 1843200}]}]}
//! ```

use std::collections::BTreeMap;

use bollard::query_parameters::StatsOptions;
use futures::StreamExt;
use serde_json::{Value, json};

use super::runtime::Runtime;

/// One container's usage now: (nanocores, working-set bytes).
async fn usage(runtime: &Runtime, id: &str) -> Option<(u64, u64)> {
    let options = StatsOptions {
        stream: false,
        one_shot: false,
    };
    let stats = runtime
        .docker()
        .stats(id, Some(options))
        .next()
        .await?
        .ok()?;
    let (now, before) = (stats.cpu_stats?, stats.precpu_stats?);
    let used = now.cpu_usage.as_ref()?.total_usage? as f64
        - before.cpu_usage.as_ref()?.total_usage.unwrap_or(0) as f64;
    let elapsed = now.system_cpu_usage? as f64 - before.system_cpu_usage.unwrap_or(0) as f64;
    let cpus = f64::from(now.online_cpus.unwrap_or(1));
    let nanocores = if elapsed > 0.0 && used > 0.0 {
        (used / elapsed * cpus * 1e9) as u64
    } else {
        0
    };
    let memory = stats.memory_stats?;
    let cache = memory
        .stats
        .as_ref()
        .and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    Some((nanocores, memory.usage.unwrap_or(0).saturating_sub(cache)))
}

/// The usage of every running container of this node's pods, by pod.
pub async fn summary(runtime: &Runtime) -> Value {
    let containers = runtime.running().await.unwrap_or_default();
    // Docker takes a second for each; all are asked at once.
    let measured =
        futures::future::join_all(containers.iter().map(|(_, _, id)| usage(runtime, id))).await;
    let mut pods: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for ((pod, container, _), used) in containers.iter().zip(measured) {
        if let Some((cpu, memory)) = used {
            pods.entry(pod).or_default().push(json!({
                "name": container, "cpuNanoCores": cpu, "memoryBytes": memory,
            }));
        }
    }
    let pods: Vec<Value> = pods
        .into_iter()
        .filter_map(|(pod, containers)| {
            let (namespace, name) = pod.split_once('/')?;
            Some(json!({"namespace": namespace, "name": name, "containers": containers}))
        })
        .collect();
    json!({"window": "1s", "pods": pods})
}
