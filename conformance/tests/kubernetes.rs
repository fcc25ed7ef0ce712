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
//! Then it runs the service-routing and rollback features once more with every request to
//! a service sent from the kit's traffic generator *inside* the cluster
//! (`SHIPSHAPE_SERVICE_PATH=in-cluster`), the path for clusters whose services the kit's
//! host cannot reach at all; its report goes to
//! `<target>/conformance/from-inside-the-cluster/kubernetes/`. Before that it checks that
//! the generator inside counts what fails: with every replica of a service gone, its
//! requests must be counted as failed.
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
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use shipshape_conformance::driver::{DeploymentSpec, Driver, ServiceSpec};
use shipshape_conformance::kubernetes::{
    KubernetesDriver, KubernetesOptions, ServicePathKind, client_from_kubeconfig,
};
use shipshape_conformance::reference::StandaloneUp;
use shipshape_conformance::run::{self, DriverChoice, Options};
use shipshape_conformance::traffic::Traffic;
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
    let from_inside = KubernetesOptions {
        service_path: Some(ServicePathKind::InCluster),
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
    // The routing and rollout promises again, every request sent from inside the cluster.
    let from_inside = match (&outcome, &through_api) {
        (Ok(_), Ok(_)) => certify_from_inside(from_inside, &report_root).await,
        _ => Ok(false),
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
    let from_inside = from_inside?;
    let nodes_as_containers = nodes_as_containers?;
    stopped?;
    if still_there {
        anyhow::bail!("namespace {left}, left by a killed run, was not removed by the next run");
    }
    Ok(outcome.success && through_api && from_inside && nodes_as_containers)
}

/// Checks that the traffic generator inside the cluster counts failures, then runs the
/// routing and rollout features with it; whether both held.
async fn certify_from_inside(
    options: KubernetesOptions,
    report_root: &std::path::Path,
) -> anyhow::Result<bool> {
    traffic_from_inside_counts_failures(options.clone()).await?;
    let mut options = Options::from_env(DriverChoice::Kubernetes(options))?;
    options.tags = Some("@service-routing or @rollback".to_owned());
    options.report_root = report_root.join("from-inside-the-cluster");
    let outcome = run::certify(options).await?;
    if !outcome.report.system.reach.contains("inside the cluster") {
        eprintln!(
            "kubernetes: the run from inside the cluster did not reach services from inside ({}); see {}",
            outcome.report.system.reach,
            outcome.html.display()
        );
        return Ok(false);
    }
    Ok(outcome.success)
}

/// Sends traffic from the generator inside the cluster to a service of one replica, then
/// scales it to none: the answers must be counted while the replica serves, and the
/// requests nobody answers must be counted as failed.
async fn traffic_from_inside_counts_failures(options: KubernetesOptions) -> anyhow::Result<()> {
    let run_id = run::run_id();
    let driver: Arc<dyn Driver> = Arc::new(KubernetesDriver::start(options, &run_id).await?);
    let namespace = format!("conformance-{run_id}-1");
    driver.create_namespace(&namespace, &run_id).await?;
    let checked = async {
        let labels = [("app".to_owned(), "web".to_owned())].into();
        let web = DeploymentSpec {
            name: "web".to_owned(),
            image: driver.probe_image("v1"),
            replicas: 1,
            labels,
            port: Some(8080),
            ..DeploymentSpec::default()
        };
        driver.deploy(&namespace, &web).await?;
        let service = ServiceSpec {
            name: "web".to_owned(),
            deployment: "web".to_owned(),
            port: 80,
            target_port: 8080,
        };
        driver.expose(&namespace, &service).await?;
        let mut waited = 0;
        while let Err(error) = driver.reach_service(&namespace, "web", "/").await {
            ensure!(
                waited < 120,
                "service web did not answer within 60 s: {error:#}"
            );
            waited += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut traffic = Traffic::start(Arc::clone(&driver), namespace.clone(), "web".to_owned());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let serving = traffic.counts();
        ensure!(
            serving.successes > 0 && serving.failures.is_empty(),
            "traffic from inside the cluster to a serving replica: {serving}"
        );
        driver.scale(&namespace, "web", 0).await?;
        let mut waited = 0;
        while !driver.list_replicas(&namespace, "web").await?.is_empty() {
            ensure!(
                waited < 120,
                "deployment web still has replicas 60 s after scaling to 0"
            );
            waited += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let gone = traffic.stop().await;
        ensure!(
            gone.failures.len() > serving.failures.len(),
            "traffic from inside the cluster to a service with no replica left counted no failed request: {gone}"
        );
        ensure!(
            gone.total() == traffic.log().len() as u64,
            "the traffic's counts ({gone}) and its log ({} outcomes) disagree",
            traffic.log().len()
        );
        println!("kubernetes: the traffic generator inside the cluster counts failures: {gone}");
        anyhow::Ok(())
    };
    let checked = checked.await;
    if let Err(error) = driver.delete_namespace(&namespace).await {
        eprintln!("kubernetes: warning: {error:#}");
    }
    driver.shut_down().await?;
    checked
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
