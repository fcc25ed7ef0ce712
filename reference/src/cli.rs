//! The `shipshape` command line: a thin `clap` layer over the library.
//!
//! - `shipshape up` runs a local cluster in the foreground: the control plane and N node
//!   agents in one process, on the local Docker engine. Ctrl-C stops it and removes every
//!   container it made; a cluster killed without that is cleaned up by the next `up` on
//!   the same data directory. (The pod network, `shipshape`, is shared by every cluster
//!   and stays.)
//! - `shipshape up --control-plane 3` runs three control-plane members as child processes,
//!   behind one front door address, and the node agents.
//! - `shipshape control-plane` runs the control plane alone; with `--member` and `--peer`,
//!   as one member of several (on this host or others).
//! - `shipshape node` runs one node agent that joins a control plane anywhere.
//!
//! `up` and `control-plane` print, once serving, `apiserver: <url>` and `kubeconfig: <path>`
//! on stdout (tools such as the conformance kit read those lines), then log to stderr.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

use crate::agent::{self, AgentConfig, runtime};
use crate::client::Credentials;
use crate::control_plane::{ControlPlaneConfig, Members};
use crate::controllers::node_lifecycle::NodeLifecycleConfig;
use crate::images;
use crate::local_cluster::{LocalCluster, LocalMembersCluster};
use crate::machines::{self, Machines};
use crate::store::peers::PeerAddress;

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
        /// How many control-plane members: 1 (in this process), or 3, 5 or 7, each a
        /// process of its own, behind the `--listen` address.
        #[arg(long = "control-plane", default_value_t = 1, value_parser = member_count)]
        control_plane: u64,
        /// Where the members of a control plane of several run: child processes of this
        /// one, or containers of their own on the `shipshape` Docker network, each with
        /// its own address (so that the links between them can be cut) — and then the
        /// node agents too, each in a container driving the engine through its socket.
        #[arg(long, value_enum, default_value_t = Machines::Processes)]
        machines: Machines,
    },
    /// Run the control plane (apiserver, store, scheduler, controllers) alone, or as one
    /// member of several.
    #[command(args_conflicts_with_subcommands = true)]
    ControlPlane {
        #[command(subcommand)]
        action: Option<MemberAction>,
        #[command(flatten)]
        common: Common,
        /// This member's id, for a control plane of several members (with `--peer`).
        /// Every member needs the same `ca.crt`, `ca.key`, `token` and `cluster-id` in its
        /// data directory.
        #[arg(long, requires = "peers")]
        member: Option<u64>,
        /// A member's peer address, `ID=HOST:PORT`, this member's included (repeatable).
        #[arg(long = "peer", value_parser = peer, requires = "member")]
        peers: Vec<(u64, PeerAddress)>,
        /// Join a running control plane that `shipshape control-plane add` told about this
        /// member, rather than start a new one: the member waits for the leader and takes
        /// the whole state from it in a snapshot. Ignored once the member has data.
        #[arg(long, requires = "member")]
        join: bool,
        /// Stop, as on SIGTERM, when stdin reaches its end: `up` starts its members so,
        /// holding their stdin, and they end with it however it ends.
        #[arg(long, hide = true)]
        stop_with_stdin: bool,
    },
    /// Run one node agent that joins a control plane.
    Node(Box<NodeArgs>),
    /// Run the service proxy: node ports forwarded to ready endpoints.
    Proxy(ProxyArgs),
}

/// What `control-plane` can do besides running a member.
#[derive(Debug, Subcommand)]
enum MemberAction {
    /// Add a member to a running control plane (a Raft configuration change); then start
    /// it with `shipshape control-plane --member ID --peer ... --join`, its data directory
    /// holding the cluster's `ca.crt`, `ca.key`, `token` and `cluster-id`. A removed
    /// member's id is never used again.
    Add {
        /// The new member's id.
        #[arg(long)]
        member: u64,
        /// Where the other members will reach the new one, `HOST:PORT`.
        #[arg(long)]
        peer_address: PeerAddress,
        /// The admin kubeconfig of the control plane.
        #[arg(long, default_value = ".shipshape/kubeconfig")]
        kubeconfig: PathBuf,
    },
    /// Take a member out of a running control plane (a Raft configuration change);
    /// refused for the last member.
    Remove {
        /// The member's id.
        #[arg(long)]
        member: u64,
        /// The admin kubeconfig of the control plane.
        #[arg(long, default_value = ".shipshape/kubeconfig")]
        kubeconfig: PathBuf,
    },
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
    /// Seconds without a heartbeat before a node is unreachable (Kubernetes: 40, four
    /// heartbeats of 10 s; here four of 1 s).
    #[arg(long, default_value_t = 4)]
    node_grace_seconds: u64,
    /// Seconds pods tolerate an unreachable node before they are replaced, unless they say
    /// otherwise (Kubernetes: 300).
    #[arg(long, default_value_t = 2)]
    eviction_seconds: u64,
    /// The range Services' node ports come from, `FIRST-LAST` (Kubernetes' apiserver
    /// flag of the same name).
    #[arg(long, default_value = "30000-32767", value_parser = port_range)]
    service_node_port_range: RangeInclusive<u16>,
    /// Another IP address or DNS name clients reach the apiserver at, for its certificate
    /// (repeatable; loopback, the listen address and the host name are always in it).
    #[arg(long = "tls-san", value_parser = tls_name)]
    tls_names: Vec<String>,
    /// `IP:PORT` where pods reach the apiserver, published as the `kubernetes` Service's
    /// endpoint (`up` with nodes: the pod network's gateway).
    #[arg(long)]
    advertise: Option<SocketAddr>,
}

/// Checks a `--tls-san`: an IP address, or a DNS name of letters, digits, `-` and `.`.
fn tls_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    let name_like = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '*');
    if text.parse::<IpAddr>().is_ok() || name_like {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}` is neither an IP address nor a DNS name"))
    }
}

/// Parses the number of control-plane members: odd, from 1 to 7.
fn member_count(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n @ (1 | 3 | 5 | 7)) => Ok(n),
        Ok(n) if n % 2 == 0 && n > 0 && n < 8 => Err(format!(
            "{n} members tolerate no more failures than {}: use an odd number (1, 3, 5 or 7)",
            n - 1
        )),
        _ => Err(format!("{text:?} is not 1, 3, 5 or 7")),
    }
}

/// Parses a member's peer address, `ID=HOST:PORT` (the host an IP address or a name).
fn peer(text: &str) -> Result<(u64, PeerAddress), String> {
    let (id, address) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ID=HOST:PORT"))?;
    let id = id
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("{id:?} is not a member id (1, 2, ...)"))?;
    Ok((id, address.trim().parse::<PeerAddress>()?))
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
    /// The node's address (its InternalIP; default: the address this machine reaches
    /// the apiserver from, as a kubelet takes the one of its default route).
    #[arg(long)]
    address: Option<IpAddr>,
    /// Where the agent runs: in this process, or in a container of its own on the
    /// `shipshape` Docker network, with an address of its own, driving the engine
    /// through its socket (mounted into the container: for clusters on your own
    /// machine). This process keeps the container and removes it when it ends.
    #[arg(long, value_enum, default_value_t = Machines::Processes)]
    machines: Machines,
    /// Stop, as on SIGTERM, when stdin reaches its end (how a node's container ends with
    /// the process that keeps it).
    #[arg(long, hide = true)]
    stop_with_stdin: bool,
    /// Also serve every Service's node ports on this node's address, as kube-proxy does on
    /// each node (a node in a container of its own does: its address is its own).
    #[arg(long)]
    serve_node_ports: bool,
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
            // Help and version go to stdout; nothing else does.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line, not clap's usage block: the first line of its message says it all.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            eprintln!("shipshape: {first} (see --help)");
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
    let result = runtime.block_on(execute(cli.command));
    // Without waiting for blocking tasks: one may be reading stdin (`--stop-with-stdin`),
    // which stays open as long as whoever started this process holds it.
    runtime.shutdown_background();
    match result {
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
        Command::Up {
            common,
            nodes,
            control_plane,
            machines,
        } if control_plane > 1 => up_members(common, nodes, control_plane, machines).await,
        Command::Up {
            machines: Machines::Containers,
            ..
        } => anyhow::bail!(
            "--machines containers is for a control plane of several members \
             (--control-plane 3, 5 or 7); a control plane of one runs in this process"
        ),
        Command::Up { common, nodes, .. } => up(common, nodes, None, false).await,
        Command::ControlPlane {
            action: Some(MemberAction::Remove { member, kubeconfig }),
            ..
        } => remove_member(member, &kubeconfig).await,
        Command::ControlPlane {
            action:
                Some(MemberAction::Add {
                    member,
                    peer_address,
                    kubeconfig,
                }),
            ..
        } => add_member(member, &peer_address, &kubeconfig).await,
        Command::ControlPlane {
            action: None,
            common,
            member,
            peers,
            join,
            stop_with_stdin,
        } => {
            let mut members = None;
            if let Some(id) = member {
                let mut by_id = BTreeMap::new();
                for (peer, address) in peers {
                    if by_id.insert(peer, address).is_some() {
                        anyhow::bail!("member {peer} is given twice with --peer");
                    }
                }
                let given = Members {
                    id,
                    peers: by_id,
                    joining: join,
                };
                given.check().map_err(anyhow::Error::msg)?;
                members = Some(given);
            }
            up(common, 0, members, stop_with_stdin).await
        }
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

/// The control plane's configuration `common` gives (with `members`), and the node
/// lifecycle's timing.
fn configs(common: Common, members: Option<Members>) -> (ControlPlaneConfig, NodeLifecycleConfig) {
    let lifecycle = NodeLifecycleConfig {
        grace_period: Duration::from_secs(common.node_grace_seconds),
        default_toleration: Duration::from_secs(common.eviction_seconds),
        ..NodeLifecycleConfig::default()
    };
    let config = ControlPlaneConfig {
        data_dir: common.data_dir,
        listen: common.listen,
        node_ports: common.service_node_port_range,
        members,
        tls_names: common.tls_names,
        advertise: common.advertise,
        ..ControlPlaneConfig::new(PathBuf::new(), common.listen)
    };
    (config, lifecycle)
}

async fn up(
    common: Common,
    nodes: u32,
    members: Option<Members>,
    stop_with_stdin: bool,
) -> anyhow::Result<()> {
    let (config, lifecycle) = configs(common, members);
    let cluster = LocalCluster::start_with(config, nodes, lifecycle).await?;
    let cp = cluster.control_plane();
    announce(&cp.url(), cp.kubeconfig(), nodes);
    tokio::select! {
        _ = wait_for_stop_signal() => {}
        _ = stdin_closed(), if stop_with_stdin => tracing::info!("stdin closed: the process that started this member is gone"),
    }
    tracing::info!("stopping");
    cluster.stop().await
}

async fn up_members(
    common: Common,
    nodes: u32,
    count: u64,
    machines: Machines,
) -> anyhow::Result<()> {
    let (config, lifecycle) = configs(common, None);
    let cluster = LocalMembersCluster::start(config, count, nodes, lifecycle, machines).await?;
    announce(cluster.url(), cluster.kubeconfig(), nodes);
    wait_for_stop_signal().await;
    tracing::info!("stopping");
    cluster.stop().await
}

/// Asks the control plane behind `kubeconfig` to remove member `id`.
async fn remove_member(id: u64, kubeconfig: &Path) -> anyhow::Result<()> {
    let request = http::Request::delete(format!("/shipshape/v1/members/{id}")).body(Vec::new())?;
    ask_control_plane(kubeconfig, request).await?;
    println!("member {id} was removed from the control plane");
    Ok(())
}

/// Asks the control plane behind `kubeconfig` to add member `id`, reached at `address`.
async fn add_member(id: u64, address: &PeerAddress, kubeconfig: &Path) -> anyhow::Result<()> {
    let body = serde_json::json!({ "id": id, "peerAddress": address.to_string() });
    let request = http::Request::post("/shipshape/v1/members")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body)?)?;
    ask_control_plane(kubeconfig, request).await?;
    println!(
        "member {id} was added to the control plane; start it with\n  \
         shipshape control-plane --member {id} --peer {id}={address} --peer ... --join\n\
         (one --peer for every member, its data directory holding the cluster's ca.crt, \
         ca.key, token and cluster-id)"
    );
    Ok(())
}

/// Sends `request` to the control plane behind `kubeconfig`; the API's message if refused.
async fn ask_control_plane(
    kubeconfig: &Path,
    request: http::Request<Vec<u8>>,
) -> anyhow::Result<String> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("failed to read the kubeconfig {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("the kubeconfig {} is not usable", kubeconfig.display()))?;
    let client = kube::Client::try_from(config)?;
    match client.request_text(request).await {
        Ok(text) => Ok(text),
        Err(kube::Error::Api(status)) => anyhow::bail!("{}", status.message),
        Err(e) => Err(e).context("the control plane could not be reached"),
    }
}

/// Prints where the API is and how to reach it (tools such as the conformance kit read
/// the `apiserver:` and `kubeconfig:` lines).
fn announce(url: &str, kubeconfig: &Path, nodes: u32) {
    let kubeconfig = kubeconfig.display().to_string();
    let what = if nodes > 0 { "nodes" } else { "namespaces" };
    // Written, not `println!`ed: a reader that closed our stdout must not stop the cluster.
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "apiserver: {url}");
    let _ = writeln!(out, "kubeconfig: {kubeconfig}");
    let _ = writeln!(out, "try: kubectl --kubeconfig {kubeconfig} get {what}");
    let _ = out.flush();
}

async fn node(args: NodeArgs) -> anyhow::Result<()> {
    if args.machines == Machines::Containers {
        return node_in_container(args).await;
    }
    let creds = credentials(args.server.clone(), args.token.clone(), &args.ca_file)?;
    let client = creds.client_as("kubelet")?;
    let docker = runtime::connect().await?;
    images::ensure(&docker).await?;
    let defaults = AgentConfig::new(&args.name, &args.cluster, args.data_dir, &args.token);
    let config = AgentConfig {
        address: match args.address {
            Some(address) => address,
            None => address_toward(&args.server).await,
        },
        cpu: args.cpu.unwrap_or(defaults.cpu),
        memory: args.memory.unwrap_or(defaults.memory),
        max_pods: args.max_pods,
        reconnect: Some(agent::Reconnect(creds.clone())),
        labels: parse_labels(&args.labels)?,
        taints: args.taints,
        ..defaults
    };
    let (stop, stopped) = watch::channel(false);
    let meter = crate::proxy::meter::Meter::default();
    let proxy = args.serve_node_ports.then(|| {
        tokio::spawn(crate::proxy::run(
            client.clone(),
            vec![config.address],
            meter.clone(),
            stopped.clone(),
        ))
    });
    let config = AgentConfig {
        proxy_meter: args.serve_node_ports.then_some(meter),
        ..config
    };
    let agent = tokio::spawn(agent::run(client, docker, config, stopped));
    tokio::select! {
        _ = wait_for_stop_signal() => {}
        _ = stdin_closed(), if args.stop_with_stdin => tracing::info!("stdin closed: the process that kept this node is gone"),
    }
    let _ = stop.send(true);
    if let Some(proxy) = proxy {
        proxy.await.context("the node's proxy panicked")?;
    }
    agent.await.context("the node agent panicked")??;
    Ok(())
}

/// `shipshape node --machines containers`: runs the agent in a container of its own
/// ([`machines::NodeMachine`]) and keeps it — its output on this process's stderr —
/// until this process is asked to stop (then stops it) or the container ends (then says
/// how, and fails).
async fn node_in_container(args: NodeArgs) -> anyhow::Result<()> {
    let docker = runtime::connect().await?;
    images::ensure(&docker).await?;
    let exe = std::env::current_exe().context("failed to locate the shipshape binary")?;
    images::ensure_machine(&docker, &exe).await?;
    // The rest of its `shipshape node` arguments, flag by flag.
    let mut rest = vec![("--token", args.token)];
    rest.extend(args.address.map(|ip| ("--address", ip.to_string())));
    rest.extend(args.cpu.map(|cpu| ("--cpu", cpu)));
    rest.extend(args.memory.map(|memory| ("--memory", memory)));
    rest.push(("--max-pods", args.max_pods.to_string()));
    rest.extend(args.labels.into_iter().map(|label| ("--label", label)));
    rest.extend(args.taints.into_iter().map(|taint| ("--taint", taint)));
    let plan = machines::NodeMachine {
        cluster: args.cluster,
        name: args.name.clone(),
        server: args.server,
        ca_file: args.ca_file,
        data_dir: args.data_dir,
        args: rest
            .into_iter()
            .flat_map(|(flag, value)| [flag.into(), value.into()])
            .collect(),
    }
    .plan(&docker, None)
    .await?;
    let mut machine = plan.start(&exe).await?;
    let ended = async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            match machine.exited().await {
                Ok(Some(how)) => return how,
                Ok(None) => {}
                Err(e) => return format!("it could not be inspected: {e:#}"),
            }
        }
    };
    tokio::select! {
        how = ended => anyhow::bail!("the container of node {} ended: {how}", args.name),
        _ = wait_for_stop_signal() => {}
        _ = stdin_closed(), if args.stop_with_stdin => {}
    }
    machine.stop(machines::NODE_STOP_TIMEOUT).await
}

/// The address of this machine that packets to the apiserver named in `server` leave
/// from (found by "connecting" a UDP socket, which sends nothing); loopback if the name
/// does not resolve.
async fn address_toward(server: &str) -> IpAddr {
    let local = async {
        let uri = server.parse::<http::Uri>().ok()?;
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let target = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
        let unspecified = match target {
            SocketAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
            SocketAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
        };
        let socket = tokio::net::UdpSocket::bind((unspecified, 0)).await.ok()?;
        socket.connect(target).await.ok()?;
        Some(socket.local_addr().ok()?.ip())
    };
    local.await.unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let client = credentials(args.server, args.token, &args.ca_file)?.client_as("kube-proxy")?;
    let (stop, stopped) = watch::channel(false);
    // No agent beside it reports its counts.
    let meter = crate::proxy::meter::Meter::default();
    let proxy = tokio::spawn(crate::proxy::run(client, args.addresses, meter, stopped));
    wait_for_stop_signal().await;
    let _ = stop.send(true);
    proxy.await.context("the proxy panicked")?;
    Ok(())
}

/// What a client of the apiserver at `server` needs, with the CA certificate in `ca_file`.
fn credentials(server: String, token: String, ca_file: &Path) -> anyhow::Result<Credentials> {
    let ca_pem = std::fs::read_to_string(ca_file)
        .with_context(|| format!("failed to read the CA {}", ca_file.display()))?;
    Ok(Credentials {
        server,
        token,
        ca_pem,
    })
}

/// Waits until stdin reaches its end (or fails).
async fn stdin_closed() {
    // Read and thrown away: what matters is the end.
    let drain = || std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    let _ = tokio::task::spawn_blocking(drain).await;
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM (Ctrl-C alone if SIGTERM cannot be caught).
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { term.as_mut()?.recv().await }, if term.is_some() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_counts_are_odd_and_small() {
        assert_eq!(member_count("3"), Ok(3));
        let even = member_count("4").expect_err("even");
        assert!(even.contains("no more failures than 3"), "{even}");
        assert!(member_count("0").is_err());
        assert!(member_count("9").is_err());
        assert!(member_count("three").is_err());
    }

    #[test]
    fn tls_names_are_addresses_or_dns_names() {
        assert_eq!(tls_name("172.18.0.1"), Ok("172.18.0.1".to_owned()));
        assert_eq!(
            tls_name("api.example.org"),
            Ok("api.example.org".to_owned())
        );
        assert!(tls_name("").is_err());
        assert!(tls_name("two words").is_err());
        assert!(tls_name("https://api.example.org").is_err());
    }

    #[test]
    fn peers_are_an_id_and_an_address() {
        assert_eq!(
            peer("2=127.0.0.1:2380"),
            Ok((2, SocketAddr::from(([127, 0, 0, 1], 2380)).into()))
        );
        let named = peer("3=member-3.example:2380").expect("a host name");
        assert_eq!(
            (named.1.host.as_str(), named.1.port),
            ("member-3.example", 2380)
        );
        assert_eq!(named.1.to_string(), "member-3.example:2380");
        assert_eq!(peer("1=[::1]:7").expect("IPv6").1.to_string(), "[::1]:7");
        for bad in [
            "2",
            "0=127.0.0.1:1",
            "x=127.0.0.1:1",
            "2=1.2.3.4",
            "2=host:0",
            "2=:2380",
            "2=bad_name:2380",
            "2=-dash:2380",
            "2=a..b:2380",
        ] {
            assert!(peer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_member_needs_peers_and_must_be_one_of_them() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(["shipshape", "control-plane"].iter().chain(args));
        assert!(
            parse(&["--member", "1"]).is_err(),
            "--member without --peer"
        );
        assert!(
            parse(&["--peer", "1=127.0.0.1:1"]).is_err(),
            "--peer without --member"
        );
        let outside = Members {
            id: 4,
            joining: false,
            peers: [(1, SocketAddr::from(([127, 0, 0, 1], 1)).into())].into(),
        };
        assert!(
            outside
                .check()
                .expect_err("not a member")
                .contains("member 4")
        );
    }
}
