//! The `shipshape` command line: a thin `clap` layer over the library.
//!
//! - `shipshape up` runs a local cluster in the foreground: the control plane and N node
//!   agents in one process, on the local Docker engine. Ctrl-C stops it and removes every
//!   container it made; a cluster killed without that is cleaned up by the next `up` on
//!   the same data directory. (The pod network, `shipshape`, is shared by every cluster
//!   and stays.)
//! - `shipshape control-plane` runs the control plane alone.
//! - `shipshape node` runs one node agent that joins a control plane anywhere.
//!
//! `up` and `control-plane` print, once serving, `apiserver: <url>` and `kubeconfig: <path>`
//! on stdout (tools such as the conformance kit read those lines), then log to stderr.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

use crate::agent::{self, AgentConfig, runtime};
use crate::client::Credentials;
use crate::control_plane::ControlPlaneConfig;
use crate::controllers::node_lifecycle::NodeLifecycleConfig;
use crate::images;
use crate::local_cluster::LocalCluster;

/// A compact, readable Kubernetes-style orchestrator.
#[derive(Debug, Parser)]
#[command(name = "shipshape", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local cluster (control plane and node agents) in the foreground until Ctrl-C.
    Up {
        #[command(flatten)]
        common: Common,
        /// How many node agents to run in this process.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
    },
    /// Run the control plane (apiserver, store, scheduler, controllers) alone.
    ControlPlane {
        #[command(flatten)]
        common: Common,
    },
    /// Run one node agent that joins a control plane.
    Node(Box<NodeArgs>),
    /// Run the service proxy: node ports forwarded to ready endpoints.
    Proxy(ProxyArgs),
}

#[derive(Debug, Args)]
struct ProxyArgs {
    /// The apiserver's URL (`https://host:port`).
    #[arg(long)]
    server: String,
    /// The bearer token.
    #[arg(long)]
    token: String,
    /// The cluster CA certificate (PEM).
    #[arg(long)]
    ca_file: PathBuf,
    /// An address to listen on besides loopback (repeatable).
    #[arg(long = "address")]
    addresses: Vec<IpAddr>,
}

#[derive(Debug, Args)]
struct Common {
    /// Directory for the store, the admin token, the CA and the kubeconfig.
    #[arg(long, default_value = ".shipshape")]
    data_dir: PathBuf,
    /// Address the apiserver listens on (loopback unless you say otherwise).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Seconds without a heartbeat before a node is unreachable (Kubernetes: 40).
    #[arg(long, default_value_t = 5)]
    node_grace_seconds: u64,
    /// Seconds pods tolerate an unreachable node before they are replaced, unless they say
    /// otherwise (Kubernetes: 300).
    #[arg(long, default_value_t = 5)]
    eviction_seconds: u64,
    /// The range Services' node ports come from, `FIRST-LAST` (Kubernetes' apiserver
    /// flag of the same name).
    #[arg(long, default_value = "30000-32767", value_parser = port_range)]
    service_node_port_range: RangeInclusive<u16>,
}

/// Parses a port range, `30000-32767`.
fn port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a range FIRST-LAST"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} is not a port number"))
    };
    let (first, last) = (port(first)?, port(last)?);
    if first > last {
        return Err(format!("the range {text:?} is empty"));
    }
    Ok(first..=last)
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// The apiserver's URL (`https://host:port`).
    #[arg(long)]
    server: String,
    /// The bearer token.
    #[arg(long)]
    token: String,
    /// The cluster CA certificate (PEM), e.g. `<data-dir>/ca.crt` of the control plane.
    #[arg(long)]
    ca_file: PathBuf,
    /// The node's name.
    #[arg(long)]
    name: String,
    /// The cluster id (the control plane's `<data-dir>/cluster-id`).
    #[arg(long)]
    cluster: String,
    /// Where this node keeps pod volumes.
    #[arg(long, default_value = ".shipshape-node")]
    data_dir: PathBuf,
    /// The node's address (its InternalIP).
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Allocatable CPU (default: the host's).
    #[arg(long)]
    cpu: Option<String>,
    /// Allocatable memory, e.g. `4Gi` (default: the host's).
    #[arg(long)]
    memory: Option<String>,
    /// How many pods the node takes.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// A node label, `key=value` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// A taint, `key=value:Effect` (repeatable).
    #[arg(long = "taint")]
    taints: Vec<String>,
}

/// Runs the command line with `args` (the first is the program name); returns the exit code.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line, not clap's usage block: the first line of its message says it all.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "shipshape: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    init_tracing();
    crate::failpoints::setup();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shipshape: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shipshape: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,raft=warn,sled=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up { common, nodes } => up(common, nodes).await,
        Command::ControlPlane { common } => up(common, 0).await,
        Command::Node(args) => node(*args).await,
        Command::Proxy(args) => proxy(args).await,
    }
}

/// Parses `key=value` labels.
fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("invalid label {l:?}: expected key=value"))
        })
        .collect()
}

async fn up(common: Common, nodes: u32) -> anyhow::Result<()> {
    let node_lifecycle = NodeLifecycleConfig {
        grace_period: Duration::from_secs(common.node_grace_seconds),
        default_toleration: Duration::from_secs(common.eviction_seconds),
        ..NodeLifecycleConfig::default()
    };
    let cluster = LocalCluster::start_with(
        ControlPlaneConfig {
            data_dir: common.data_dir,
            listen: common.listen,
            node_ports: common.service_node_port_range,
        },
        nodes,
        node_lifecycle,
    )
    .await?;
    let cp = cluster.control_plane();
    let kubeconfig = cp.kubeconfig().display().to_string();
    let what = if nodes > 0 { "nodes" } else { "namespaces" };
    // Written, not `println!`ed: a reader that closed our stdout must not stop the cluster.
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "apiserver: {}", cp.url());
        let _ = writeln!(out, "kubeconfig: {kubeconfig}");
        let _ = writeln!(out, "try: kubectl --kubeconfig {kubeconfig} get {what}");
        let _ = out.flush();
    }
    wait_for_stop_signal().await;
    tracing::info!("stopping");
    cluster.stop().await
}

async fn node(args: NodeArgs) -> anyhow::Result<()> {
    let ca_pem = std::fs::read_to_string(&args.ca_file)
        .with_context(|| format!("failed to read the CA {}", args.ca_file.display()))?;
    let creds = Credentials {
        server: args.server.clone(),
        token: args.token.clone(),
        ca_pem,
    };
    let client = creds.client()?;
    let docker = runtime::connect().await?;
    images::ensure(&docker).await?;
    let mut config = AgentConfig::new(
        &args.name,
        &args.cluster,
        args.data_dir.clone(),
        &args.token,
    );
    config.address = args.address;
    if let Some(cpu) = args.cpu {
        config.cpu = cpu;
    }
    if let Some(memory) = args.memory {
        config.memory = memory;
    }
    config.max_pods = args.max_pods;
    config.labels = parse_labels(&args.labels)?;
    config.taints = args.taints;
    let (stop, stopped) = watch::channel(false);
    let agent = tokio::spawn(agent::run(client, docker, config, stopped));
    wait_for_stop_signal().await;
    let _ = stop.send(true);
    agent.await.context("the node agent panicked")??;
    Ok(())
}

async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let ca_pem = std::fs::read_to_string(&args.ca_file)
        .with_context(|| format!("failed to read the CA {}", args.ca_file.display()))?;
    let client = Credentials {
        server: args.server,
        token: args.token,
        ca_pem,
    }
    .client()?;
    let (stop, stopped) = watch::channel(false);
    let proxy = tokio::spawn(crate::proxy::run(client, args.addresses, stopped));
    wait_for_stop_signal().await;
    let _ = stop.send(true);
    proxy.await.context("the proxy panicked")?;
    Ok(())
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
