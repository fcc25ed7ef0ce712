//! Certifies a cluster the kit did not start for itself, through nothing but a kubeconfig:
//! starts `shipshape up` on its own — the control plane, three node agents and the service
//! proxy in one process, as a user runs it — and runs `features/` against it with the
//! `kubernetes` driver, then stops it. The report goes to `<target>/conformance/kubernetes/`.
//!
//! Then it runs the service-routing feature once more with every request to a service or a
//! replica going through the API server's `services/proxy` and `pods/proxy` instead
//! (`SHIPSHAPE_SERVICE_PATH` and `SHIPSHAPE_REPLICA_PATH` set to `api-proxy`), the path for
//! clusters whose node ports and pods the kit cannot reach; its report goes to
//! `<target>/conformance/through-the-api-server/kubernetes/`.
//!
//! Unless a kubeconfig is given, it then starts a second `shipshape up` on its own, of
//! three members where every member and node is a container (`--control-plane 3
//! --machines containers`), and runs the partition scenario against it through the
//! `kubernetes` driver, which finds the node containers by name
//! (`SHIPSHAPE_NODE_CONTAINERS`) and cuts one off as it would a kind node; the scenario
//! must run and pass, not be found inapplicable. Its report goes to
//! `<target>/conformance/nodes-as-containers/kubernetes/`.
//!
//! Before the run it leaves a namespace as a killed run of the kit would (labelled with
//! the id of a run whose process is gone), and checks afterwards that the run removed it.
//!
//! The kubernetes driver's other settings come from the environment as usual
//! (`SHIPSHAPE_TAGS`, `SHIPSHAPE_PROFILE`, `SHIPSHAPE_NODE_ADDRESS`, ...; see
//! `shipshape_conformance::kubernetes`). With `SHIPSHAPE_KUBECONFIG` set, it certifies that
//! cluster instead, and starts nothing.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use shipshape_conformance::kubernetes::{
    KubernetesOptions, ServicePathKind, client_from_kubeconfig,
};
use shipshape_conformance::reference::StandaloneUp;
use shipshape_conformance::run::{self, DriverChoice, Options};
use shipshape_conformance::{kubeapi, reaper};

fn main() -> ExitCode {
    // First: this process may be the `shipshape up` it started.
    if let Some(code) = shipshape_conformance::run_reference_child_if_requested() {
        return code;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kubernetes: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(certify()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("kubernetes: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts `shipshape up` unless a kubeconfig is given, certifies the cluster, stops it.
async fn certify() -> anyhow::Result<bool> {
    let mut kubernetes = KubernetesOptions::from_env()?;
    let report_root = run::default_report_root();
    let up = if kubernetes.kubeconfig.is_none() {
        let dir = report_root.join("kubernetes");
        std::fs::create_dir_all(&dir)?;
        let up = StandaloneUp::start(&dir.join("shipshape-up.log")).await?;
        println!(
            "kubernetes: started `shipshape up` on its own (data in {}); certifying it through its kubeconfig {}",
            up.data_dir().display(),
            up.kubeconfig().display()
        );
        kubernetes.kubeconfig = Some(up.kubeconfig().to_owned());
        Some(up)
    } else {
        None
    };
    let (client, _) = client_from_kubeconfig(&kubernetes).await?;
    let dead_run = reaper::run_id(1, 99_999_999);
    let left = format!("conformance-{dead_run}-1");
    kubeapi::create_namespace(&client, &left, &dead_run).await?;
    let through_api = KubernetesOptions {
        service_path: Some(ServicePathKind::ApiProxy),
        api_proxy_for_replicas: true,
        ..kubernetes.clone()
    };
    let kubernetes_options = kubernetes.clone();
    let outcome = match Options::from_env(DriverChoice::Kubernetes(kubernetes)) {
        Ok(options) => run::certify(options).await,
        Err(error) => Err(error),
    };
    // The same routing promises, every request through the API server.
    let through_api = match (
        &outcome,
        Options::from_env(DriverChoice::Kubernetes(through_api)),
    ) {
        (Ok(_), Ok(mut options)) => {
            options.tags = Some("@service-routing".to_owned());
            options.report_root = report_root.join("through-the-api-server");
            run::certify(options).await.map(|outcome| outcome.success)
        }
        (Ok(_), Err(error)) => Err(error),
        (Err(_), _) => Ok(false),
    };
    let nodes_as_containers = match (&outcome, &up) {
        (Ok(_), Some(_)) => partition_node_containers(&kubernetes_options, &report_root).await,
        _ => Ok(true),
    };
    let still_there = Api::<Namespace>::all(client)
        .get_opt(&left)
        .await?
        .is_some_and(|namespace| namespace.metadata.deletion_timestamp.is_none());
    let stopped = match up {
        Some(up) => up.stop().await,
        None => Ok(()),
    };
    let outcome = outcome?;
    let through_api = through_api?;
    let nodes_as_containers = nodes_as_containers?;
    stopped?;
    if still_there {
        anyhow::bail!("namespace {left}, left by a killed run, was not removed by the next run");
    }
    Ok(outcome.success && through_api && nodes_as_containers)
}

/// Starts `shipshape up --control-plane 3 --machines containers` and runs the partition
/// scenario against it through the `kubernetes` driver with node containers found by
/// name; whether it ran and passed.
async fn partition_node_containers(
    kubernetes: &KubernetesOptions,
    report_root: &std::path::Path,
) -> anyhow::Result<bool> {
    let report_root = report_root.join("nodes-as-containers");
    let dir = report_root.join("kubernetes");
    std::fs::create_dir_all(&dir)?;
    let up = StandaloneUp::start_with_members(&dir.join("shipshape-up.log"), 3).await?;
    let options = KubernetesOptions {
        kubeconfig: Some(up.kubeconfig().to_owned()),
        node_containers: Some(up.node_containers()?),
        ..kubernetes.clone()
    };
    let outcome = match Options::from_env(DriverChoice::Kubernetes(options)) {
        Ok(mut options) => {
            options.tags = Some("@partition-node".to_owned());
            options.report_root = report_root;
            run::certify(options).await
        }
        Err(error) => Err(error),
    };
    let stopped = up.stop().await;
    let outcome = outcome?;
    stopped?;
    if outcome.report.passed == 0 {
        eprintln!(
            "kubernetes: the partition scenario did not run against the node containers; see {}",
            outcome.html.display()
        );
        return Ok(false);
    }
    Ok(outcome.success)
}
