//! The `shipshape` command line: a thin `clap` layer over the library.
//!
//! - `shipshape up` runs a local cluster in the foreground (today: the control plane; node
//!   agents and the proxy join it as they are built) and stops it cleanly on Ctrl-C.
//! - `shipshape control-plane` runs the control plane alone.
//!
//! Both print, once serving, `apiserver: <url>` and `kubeconfig: <path>` on stdout (tools
//! such as the conformance kit read those lines), then log to stderr.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::control_plane::{ControlPlane, ControlPlaneConfig};

/// A compact, readable Kubernetes-style orchestrator.
#[derive(Debug, Parser)]
#[command(name = "shipshape", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local cluster in the foreground until Ctrl-C.
    Up {
        #[command(flatten)]
        common: Common,
        /// How many node agents to run in this process.
        #[arg(long, default_value_t = 0)]
        nodes: u32,
    },
    /// Run the control plane (apiserver and store) alone.
    ControlPlane {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Directory for the store, the admin token and the kubeconfig.
    #[arg(long, default_value = ".shipshape")]
    data_dir: PathBuf,
    /// Address the apiserver listens on (loopback unless you say otherwise).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
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
    let (common, nodes) = match command {
        Command::Up { common, nodes } => (common, nodes),
        Command::ControlPlane { common } => (common, 0),
    };
    if nodes > 0 {
        anyhow::bail!("node agents are not part of this version yet; run with --nodes 0");
    }
    let cp = ControlPlane::start(ControlPlaneConfig {
        data_dir: common.data_dir,
        listen: common.listen,
    })
    .await?;
    let kubeconfig = cp.kubeconfig().display().to_string();
    println!("apiserver: {}", cp.url());
    println!("kubeconfig: {kubeconfig}");
    println!("try: kubectl --kubeconfig {kubeconfig} get namespaces");
    wait_for_stop_signal().await;
    tracing::info!("stopping");
    cp.stop().await;
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
