//! The `reference` driver: certifies shipshape's own reference orchestrator.
//!
//! For each run it starts one fresh cluster — `shipshape up --nodes 3`: the control plane
//! and three node agents driving the local Docker engine — as a real child process, on a
//! data directory of its own, and then talks to it only through the Kubernetes API, as it
//! would to any cluster. Every scenario of the run shares that cluster; each has its own
//! namespace. Nothing of the orchestrator is linked in besides its command line
//! (`shipshape::cli::run`), which runs in the children.
//!
//! # How children are started
//!
//! The test binary re-executes itself (`std::env::current_exe()`) with [`CHILD_ENV`] set
//! and a `shipshape` command line (`argv[0]` is `shipshape`). Its `main` calls
//! [`run_reference_child_if_requested`] first, which sees the variable and runs the
//! command line instead of the harness. So the orchestrator under test is the very code
//! the test binary was built with, in processes of their own that can be SIGKILLed.
//!
//! - The cluster: `shipshape up --nodes 3 --data-dir DIR --listen 127.0.0.1:0`. Before
//!   starting it the driver checks that a Docker engine answers (`GET /_ping` on
//!   `DOCKER_HOST`, or `/var/run/docker.sock`), and refuses to start, saying so, if none
//!   does. The child announces itself on stdout (`apiserver: URL`, then
//!   `kubeconfig: PATH`); the driver reads those lines (with a time limit: the first run
//!   builds the images), builds a client from the kubeconfig, polls `/readyz`, and waits
//!   for the three nodes to be Ready.
//! - An added node ([`Driver::add_node`]): `shipshape node --server URL --token T
//!   --ca-file DIR/ca.crt --cluster ID --name NAME --data-dir DIR/extra-nodes/NAME` with
//!   the size, labels and taints asked for; the driver waits until its Node is Ready.
//!
//! Everything a child writes (stdout and stderr) is appended to a log file in the report
//! directory (`reference-cluster.log`, `reference-node-NAME.log`), whose tail goes into
//! the error when a child fails to start.
//!
//! # Lifetime
//!
//! Children are stopped with SIGTERM, which makes shipshape remove every container and
//! network it made: an added node when its scenario ends ([`Driver::remove_node`], then
//! its Node object is deleted), everything at the end of the run
//! ([`Driver::shut_down`]). The one exception is the *restart the control plane* fault,
//! which SIGKILLs the cluster and starts `up` again on the same data directory: the new
//! process reaps the containers the killed one left and its agents start the pods again.
//! Should the harness itself be killed, each child notices that its stdin (a pipe the
//! driver holds open) reached end-of-file and sends itself SIGTERM, so no cluster outlives
//! its run and no container is left behind.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::FutureExt as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::driver::{
    Admission, Capability, DeploymentSpec, Driver, DriverFuture, Fault, HttpRequest, HttpResponse,
    NodeSpec, NodeStatus, PodSpec, Replica, Revision, ServiceSpec, Taint,
};
use crate::{kubeapi, plain_http};

/// Environment variable that turns the test binary into a `shipshape` child process.
pub const CHILD_ENV: &str = "SHIPSHAPE_CONFORMANCE_REFERENCE_CHILD";

/// How many node agents the cluster runs besides the ones scenarios add.
pub const NODES: usize = 3;

/// How long the cluster may take to announce its kubeconfig after it is started. The
/// first start on a machine builds the images first (about 20 seconds).
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(180);

/// How long the control plane may take to answer `/readyz` once it has announced itself.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the cluster's nodes, or an added node, may take to be Ready.
const NODES_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a child may take to stop cleanly (its containers removed) after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the Docker engine may take to answer `/_ping`.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between two polls of the API while waiting for readiness.
const POLL: Duration = Duration::from_millis(100);

/// The signal number of SIGKILL, which is what `Child::start_kill` sends on Unix.
const SIGKILL: i32 = 9;

/// How many lines of a child's log go into a start-up error.
const LOG_TAIL_LINES: usize = 40;

/// If this process was started as a `shipshape` child by [`ReferenceDriver`], runs the
/// `shipshape` command line and returns its exit code; otherwise returns `None`.
///
/// Call it first thing in `main`, before any runtime or argument parsing: the child's
/// arguments are `shipshape`'s, not the harness's, and `shipshape` builds its own runtime.
pub fn run_reference_child_if_requested() -> Option<ExitCode> {
    std::env::var_os(CHILD_ENV)?;
    // The parent holds our stdin open for as long as it lives; end-of-file means it is
    // gone (even if it was SIGKILLed). Nobody tests us any more: stop as on Ctrl-C, which
    // removes our containers, and leave for good if that takes too long.
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buffer = [0_u8; 64];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if signal(std::process::id(), "TERM").is_ok() {
            std::thread::sleep(STOP_TIMEOUT);
        }
        std::process::exit(1);
    });
    Some(shipshape::cli::run(std::env::args_os().collect()))
}

/// Sends a signal (`TERM`, `KILL`) to one process, by its id, with `kill(1)`: the
/// workspace forbids `unsafe`, and so the direct system call.
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("failed to run kill -s {name} {pid}"))?;
    if !status.success() {
        bail!("kill -s {name} {pid} failed ({status})");
    }
    Ok(())
}

/// Stops a child with SIGTERM and waits for it to finish cleaning up; SIGKILLs it if it
/// takes longer than [`STOP_TIMEOUT`]. Returns how it ended.
async fn stop_child(child: &mut Child, what: &str) -> anyhow::Result<ExitStatus> {
    if let Some(status) = child
        .try_wait()
        .with_context(|| format!("failed to check on {what}"))?
    {
        return Ok(status);
    }
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("{what} has no process id"))?;
    signal(pid, "TERM").with_context(|| format!("failed to stop {what}"))?;
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(status) => status.with_context(|| format!("failed to reap {what}")),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            bail!("{what} did not stop within {STOP_TIMEOUT:?} of SIGTERM and was killed")
        }
    }
}

/// Checks that a Docker engine answers, where `shipshape` will look for one.
async fn check_docker() -> anyhow::Result<()> {
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
    let ping = HttpRequest {
        method: "GET".to_owned(),
        path: "/_ping".to_owned(),
        body: String::new(),
    };
    let attempt = async {
        if let Some(path) = host.strip_prefix("unix://") {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("failed to connect to {path}"))?;
            plain_http::exchange(stream, "docker", &ping).await
        } else if let Some(authority) = host.strip_prefix("tcp://") {
            plain_http::send(authority, &ping).await
        } else {
            bail!("DOCKER_HOST={host} is neither unix:// nor tcp://, which is all this check knows")
        }
    };
    let answer = match tokio::time::timeout(DOCKER_TIMEOUT, attempt).await {
        Ok(Ok(answer)) if answer.status == 200 => return Ok(()),
        Ok(Ok(answer)) => format!("it answered {} {:?}", answer.status, answer.body),
        Ok(Err(error)) => format!("{error:#}"),
        Err(_) => format!("no answer within {DOCKER_TIMEOUT:?}"),
    };
    bail!(
        "no Docker engine is reachable at {host} ({answer}); the reference runs every pod as a \
         Docker container, so it cannot be certified without one: start dockerd, or point \
         DOCKER_HOST at a running engine"
    )
}

/// The reference orchestrator, run as child processes for the length of a test run.
pub struct ReferenceDriver {
    /// The running cluster; locked for the whole of a restart.
    cluster: tokio::sync::Mutex<Cluster>,
    /// Client for the current control plane, replaced after every restart.
    client: RwLock<kube::Client>,
    /// Node agents added by scenarios, by node name.
    extra_nodes: tokio::sync::Mutex<BTreeMap<String, Child>>,
    /// Where the cluster's stdout and stderr are appended; node logs go next to it.
    log_path: PathBuf,
    /// The cluster's data directory, kept across restarts, removed on drop.
    data_dir: tempfile::TempDir,
}

/// One incarnation of the `shipshape up` child process.
struct Cluster {
    /// The child process (its stdin pipe is held open inside).
    child: Child,
    /// The API server URL it announced.
    apiserver: String,
    /// The kubeconfig it announced.
    kubeconfig: PathBuf,
    /// A client built from that kubeconfig, checked ready.
    client: kube::Client,
    /// 1 for the first start of the run, counting up with every restart.
    generation: u32,
}

impl ReferenceDriver {
    /// Starts a fresh reference cluster (control plane and [`NODES`] node agents) on a new
    /// temporary data directory, waits until it is ready, and appends its output to
    /// `log_path`. Fails, saying so, when no Docker engine is reachable.
    pub async fn start(log_path: PathBuf) -> anyhow::Result<Self> {
        check_docker().await?;
        let data_dir = tempfile::Builder::new()
            .prefix("shipshape-conformance-")
            .tempdir()
            .context("failed to create a data directory for the reference cluster")?;
        // A new run starts a new log, and leaves no node logs of an earlier run about.
        File::create(&log_path)
            .with_context(|| format!("failed to create the cluster log {}", log_path.display()))?;
        if let Some(Ok(entries)) = log_path.parent().map(std::fs::read_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("reference-node-") && name.ends_with(".log") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let cluster = Cluster::start(data_dir.path(), &log_path, 1).await?;
        Ok(Self {
            client: RwLock::new(cluster.client.clone()),
            cluster: tokio::sync::Mutex::new(cluster),
            extra_nodes: tokio::sync::Mutex::new(BTreeMap::new()),
            log_path,
            data_dir,
        })
    }

    /// The client for the control plane currently running.
    fn client(&self) -> kube::Client {
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// SIGKILLs the cluster, starts it again on the same data directory, and switches to a
    /// client for the new process.
    async fn restart_control_plane(&self) -> anyhow::Result<()> {
        let mut cluster = self.cluster.lock().await;
        if let Some(status) = cluster
            .child
            .try_wait()
            .context("failed to check on the reference cluster")?
        {
            bail!(
                "the reference cluster had already exited ({status}) before it was killed; see {}",
                self.log_path.display()
            );
        }
        // `start_kill` is SIGKILL on Unix: no shutdown hook runs, nothing gets flushed.
        cluster
            .child
            .start_kill()
            .context("failed to SIGKILL the reference cluster")?;
        let status = cluster
            .child
            .wait()
            .await
            .context("failed to reap the killed reference cluster")?;
        if status.signal() != Some(SIGKILL) {
            bail!("the reference cluster ended with {status} instead of being killed by SIGKILL");
        }
        tracing::info!(apiserver = %cluster.apiserver, "reference cluster killed");
        let generation = cluster.generation + 1;
        let restarted = Cluster::start(self.data_dir.path(), &self.log_path, generation).await?;
        *self.client.write().unwrap_or_else(PoisonError::into_inner) = restarted.client.clone();
        *cluster = restarted;
        Ok(())
    }

    /// Starts `shipshape node` for `spec` and waits until its Node is Ready.
    async fn start_node(&self, spec: &NodeSpec) -> anyhow::Result<()> {
        let mut extra_nodes = self.extra_nodes.lock().await;
        if extra_nodes.contains_key(&spec.name) {
            bail!("node {} was already added", spec.name);
        }
        let dir = self.data_dir.path();
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .map(|text| text.trim().to_owned())
                .with_context(|| {
                    format!(
                        "failed to read the cluster's {file} in {} to join a node",
                        dir.display()
                    )
                })
        };
        let (token, cluster_id) = (read("token")?, read("cluster-id")?);
        let apiserver = self.cluster.lock().await.apiserver.clone();
        let mut args: Vec<OsString> = vec![
            "node".into(),
            "--server".into(),
            apiserver.into(),
            "--token".into(),
            token.into(),
            "--ca-file".into(),
            dir.join("ca.crt").into(),
            "--cluster".into(),
            cluster_id.into(),
            "--name".into(),
            spec.name.clone().into(),
            "--data-dir".into(),
            dir.join("extra-nodes").join(&spec.name).into(),
        ];
        if let Some(millicpu) = spec.allocatable.millicpu {
            args.extend(["--cpu".into(), format!("{millicpu}m").into()]);
        }
        if let Some(bytes) = spec.allocatable.memory_bytes {
            args.extend(["--memory".into(), bytes.to_string().into()]);
        }
        if let Some(max_pods) = spec.max_pods {
            args.extend(["--max-pods".into(), max_pods.to_string().into()]);
        }
        for (key, value) in &spec.labels {
            args.extend(["--label".into(), format!("{key}={value}").into()]);
        }
        for taint in &spec.taints {
            args.extend(["--taint".into(), taint.to_string().into()]);
        }
        let log_path = self
            .log_path
            .with_file_name(format!("reference-node-{}.log", spec.name));
        File::create(&log_path)
            .with_context(|| format!("failed to create the node log {}", log_path.display()))?;
        let (mut child, _log, log_start) = spawn(&args, &log_path, false)?;
        let client = self.client();
        let ready = wait_until(NODES_READY_TIMEOUT, &mut child, || async {
            kubeapi::node_ready(&client, &spec.name).await
        })
        .await;
        if let Err(error) = ready {
            let _ = stop_child(&mut child, &format!("node agent {}", spec.name)).await;
            let _ = kubeapi::delete_node(&client, &spec.name).await;
            bail!(
                "node {} did not become Ready: {error:#}; its output:\n{}",
                spec.name,
                log_tail(&log_path, log_start)
            );
        }
        tracing::info!(node = %spec.name, "added node ready");
        extra_nodes.insert(spec.name.clone(), child);
        Ok(())
    }

    /// Stops an added node's agent (which removes its containers) and deletes its Node.
    async fn stop_node(&self, name: &str) -> anyhow::Result<()> {
        let child = self.extra_nodes.lock().await.remove(name);
        let Some(mut child) = child else {
            bail!("node {name} was not added by this driver; only added nodes can be removed");
        };
        let stopped = stop_child(&mut child, &format!("node agent {name}")).await;
        // The Node goes whatever happened to the agent: later scenarios must not see it.
        kubeapi::delete_node(&self.client(), name).await?;
        let status = stopped?;
        if !status.success() {
            bail!(
                "node agent {name} ended with {status} when stopped; see {}",
                self.log_path
                    .with_file_name(format!("reference-node-{name}.log"))
                    .display()
            );
        }
        Ok(())
    }

    /// Stops every added node, then the cluster, cleanly.
    async fn stop_all(&self) -> anyhow::Result<()> {
        let names: Vec<String> = self.extra_nodes.lock().await.keys().cloned().collect();
        let mut failures = Vec::new();
        for name in names {
            if let Err(error) = self.stop_node(&name).await {
                failures.push(format!("{error:#}"));
            }
        }
        let mut cluster = self.cluster.lock().await;
        match stop_child(&mut cluster.child, "the reference cluster").await {
            Ok(status) if status.success() => {}
            Ok(status) => failures.push(format!(
                "the reference cluster ended with {status} when stopped; see {}",
                self.log_path.display()
            )),
            Err(error) => failures.push(format!("{error:#}")),
        }
        if !failures.is_empty() {
            bail!("{}", failures.join("; "));
        }
        Ok(())
    }
}

impl Drop for ReferenceDriver {
    fn drop(&mut self) {
        // Normally `shut_down` has stopped everything. If not (the run failed half way),
        // ask every child to stop cleanly: they remove their containers on SIGTERM.
        let cluster = self.cluster.get_mut();
        let extra = self.extra_nodes.get_mut().values();
        for child in extra.chain(std::iter::once(&cluster.child)) {
            if let Some(pid) = child.id() {
                let _ = signal(pid, "TERM");
            }
        }
    }
}

impl std::fmt::Debug for ReferenceDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceDriver")
            .field("data_dir", &self.data_dir.path())
            .field("log_path", &self.log_path)
            .finish_non_exhaustive()
    }
}

/// Re-executes the test binary as `shipshape ARGS`, appending its stderr — and its stdout,
/// unless `capture_stdout` — to the log. Returns the child, the log, and where this
/// start's output begins in it.
fn spawn(
    args: &[OsString],
    log_path: &Path,
    capture_stdout: bool,
) -> anyhow::Result<(Child, File, u64)> {
    let exe = std::env::current_exe().context("failed to locate the test binary to re-execute")?;
    let mut log = OpenOptions::new()
        .append(true)
        .open(log_path)
        .with_context(|| format!("failed to open the log {}", log_path.display()))?;
    // The command line goes into the log, but not the bearer token that follows `--token`.
    let shown: Vec<String> = args
        .iter()
        .enumerate()
        .map(|(i, arg)| {
            let after_token = i > 0 && args[i - 1] == "--token";
            if after_token {
                "<redacted>".to_owned()
            } else {
                arg.to_string_lossy().into_owned()
            }
        })
        .collect();
    writeln!(log, "=== shipshape {}", shown.join(" "))
        .with_context(|| format!("failed to write the log {}", log_path.display()))?;
    let log_start = log.stream_position().unwrap_or(0);
    let stderr = log
        .try_clone()
        .context("failed to share the log with the child")?;
    let stdout = if capture_stdout {
        Stdio::piped()
    } else {
        Stdio::from(
            log.try_clone()
                .context("failed to share the log with the child")?,
        )
    };
    let what = args.first().map_or_else(String::new, |command| {
        command.to_string_lossy().into_owned()
    });
    let child = Command::new(&exe)
        .arg0("shipshape")
        .args(args)
        .env(CHILD_ENV, "1")
        // Its log is a file: no colour codes in it.
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::from(stderr))
        // Stopped on purpose (SIGTERM, so it cleans up), never by a drop.
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("failed to start {} as shipshape {what}", exe.display()))?;
    Ok((child, log, log_start))
}

/// Polls `ready` until it answers true, failing early if `child` exits, and at `timeout`.
async fn wait_until<F, Fut>(
    timeout: Duration,
    child: &mut Child,
    mut ready: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match ready().await {
            Ok(true) => return Ok(()),
            Ok(false) => "not yet".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        if let Some(status) = child.try_wait().context("failed to check on the child")? {
            bail!("the process exited ({status}) before it was ready");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("not ready within {timeout:?}; last answer: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Cluster {
    /// Starts the child, reads its announcement, connects, and waits for `/readyz` and for
    /// its nodes.
    async fn start(data_dir: &Path, log_path: &Path, generation: u32) -> anyhow::Result<Self> {
        let args: Vec<OsString> = vec![
            "up".into(),
            "--nodes".into(),
            NODES.to_string().into(),
            "--data-dir".into(),
            data_dir.as_os_str().to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        let (mut child, mut log, log_start) = spawn(&args, log_path, true)?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("the reference cluster's stdout was not captured"))?;
        let mut lines = BufReader::new(stdout).lines();

        let announced =
            tokio::time::timeout(ANNOUNCE_TIMEOUT, read_announcement(&mut lines, &mut log)).await;
        let (apiserver, kubeconfig) = match announced {
            Ok(Ok(Some(announcement))) => announcement,
            Ok(Ok(None)) => {
                let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await
                {
                    Ok(Ok(status)) => status.to_string(),
                    _ => "closed its stdout".to_owned(),
                };
                bail!(
                    "the reference cluster exited ({status}) before printing its kubeconfig; its output:\n{}",
                    log_tail(log_path, log_start)
                );
            }
            Ok(Err(error)) => {
                let _ = child.start_kill();
                return Err(error.context("failed to read the reference cluster's stdout"));
            }
            Err(_) => {
                let _ = stop_child(&mut child, "the reference cluster").await;
                bail!(
                    "the reference cluster did not print its kubeconfig within {ANNOUNCE_TIMEOUT:?}; its output:\n{}",
                    log_tail(log_path, log_start)
                );
            }
        };
        // Keep draining stdout, so the child never blocks on a full pipe.
        tokio::spawn(copy_lines(lines, log));

        let started = async {
            let client = connect(&kubeconfig).await?;
            wait_until(READY_TIMEOUT, &mut child, || async {
                let request = http::Request::get("/readyz")
                    .body(Vec::new())
                    .context("failed to build the /readyz request")?;
                client
                    .request_text(request)
                    .await
                    .map(|_| true)
                    .with_context(|| format!("GET {apiserver}/readyz failed"))
            })
            .await
            .context("the control plane did not answer /readyz")?;
            wait_until(NODES_READY_TIMEOUT, &mut child, || async {
                let nodes = kubeapi::list_nodes(&client).await?;
                Ok(nodes.iter().filter(|node| node.ready).count() >= NODES)
            })
            .await
            .with_context(|| format!("the cluster's {NODES} nodes were not all Ready"))?;
            anyhow::Ok(client)
        };
        let client = match started.await {
            Ok(client) => client,
            Err(error) => {
                let _ = stop_child(&mut child, "the reference cluster").await;
                bail!(
                    "the reference cluster at {apiserver} did not start: {error:#}; its output:\n{}",
                    log_tail(log_path, log_start)
                );
            }
        };
        tracing::info!(%apiserver, kubeconfig = %kubeconfig.display(), generation, "reference cluster ready");
        Ok(Self {
            child,
            apiserver,
            kubeconfig,
            client,
            generation,
        })
    }
}

/// Reads stdout until the `kubeconfig:` line (copying every line to the log), and returns
/// the announced API server URL and kubeconfig path; `None` if stdout closes first.
async fn read_announcement(
    lines: &mut Lines<BufReader<ChildStdout>>,
    log: &mut File,
) -> anyhow::Result<Option<(String, PathBuf)>> {
    let mut apiserver = String::new();
    while let Some(line) = lines.next_line().await? {
        let _ = writeln!(log, "{line}");
        if let Some(url) = line.strip_prefix("apiserver:") {
            apiserver = url.trim().to_owned();
        } else if let Some(path) = line.strip_prefix("kubeconfig:") {
            return Ok(Some((apiserver, PathBuf::from(path.trim()))));
        }
    }
    Ok(None)
}

/// Copies the rest of the child's stdout into the log until the child closes it.
async fn copy_lines(mut lines: Lines<BufReader<ChildStdout>>, mut log: File) {
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = writeln!(log, "{line}");
    }
}

/// Builds a client from the kubeconfig the control plane wrote.
async fn connect(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("failed to read the kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("failed to load the kubeconfig {}", kubeconfig.display()))?;
    kube::Client::try_from(config).with_context(|| {
        format!(
            "failed to build a client from the kubeconfig {}",
            kubeconfig.display()
        )
    })
}

/// The last lines a child wrote to the log since `start`.
fn log_tail(log_path: &Path, start: u64) -> String {
    let mut text = String::new();
    let read = File::open(log_path).and_then(|mut file| {
        file.seek(SeekFrom::Start(start))?;
        file.read_to_string(&mut text)
    });
    if let Err(error) = read {
        return format!("(could not read {}: {error})", log_path.display());
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    format!("{tail}\n(full log: {})", log_path.display())
}

impl Driver for ReferenceDriver {
    fn name(&self) -> &str {
        "reference"
    }

    fn describe(&self) -> String {
        let serving = match self.cluster.try_lock() {
            Ok(cluster) => format!(
                "at {}, kubeconfig {}",
                cluster.apiserver,
                cluster.kubeconfig.display()
            ),
            Err(_) => "restarting".to_owned(),
        };
        format!(
            "shipshape reference cluster (`shipshape up --nodes {NODES}` on the local Docker \
             engine), a child process {serving}; data in {}, log in {}",
            self.data_dir.path().display(),
            self.log_path.display()
        )
    }

    fn create_namespace<'a>(&'a self, namespace: &'a str, run_id: &'a str) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::create_namespace(&client, namespace, run_id).await }.boxed()
    }

    fn delete_namespace<'a>(&'a self, namespace: &'a str) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::delete_namespace(&client, namespace).await }.boxed()
    }

    fn deploy<'a>(&'a self, namespace: &'a str, spec: &'a DeploymentSpec) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::deploy(&client, namespace, spec).await }.boxed()
    }

    fn read_deployment<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Option<DeploymentSpec>> {
        let client = self.client();
        async move { kubeapi::read_deployment(&client, namespace, name).await }.boxed()
    }

    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        replicas: u32,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::scale(&client, namespace, name, replicas).await }.boxed()
    }

    fn update_image<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        image: &'a str,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::update_image(&client, namespace, name, image).await }.boxed()
    }

    fn roll_back<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        to: Revision,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::roll_back(&client, namespace, name, to).await }.boxed()
    }

    fn expose<'a>(&'a self, namespace: &'a str, service: &'a ServiceSpec) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::expose(&client, namespace, service).await }.boxed()
    }

    fn list_replicas<'a>(
        &'a self,
        namespace: &'a str,
        deployment: &'a str,
    ) -> DriverFuture<'a, Vec<Replica>> {
        let client = self.client();
        async move { kubeapi::list_replicas(&client, namespace, deployment).await }.boxed()
    }

    fn reach_service<'a>(
        &'a self,
        namespace: &'a str,
        service: &'a str,
        _path: &'a str,
    ) -> DriverFuture<'a, String> {
        async move {
            bail!(
                "reaching service {namespace}/{service} is not supported yet by the reference driver (the reference has no service proxy yet)"
            )
        }
        .boxed()
    }

    fn supports(&self, fault: &Fault) -> bool {
        matches!(fault, Fault::RestartControlPlane)
    }

    fn inject<'a>(&'a self, fault: &'a Fault) -> DriverFuture<'a, ()> {
        async move {
            match fault {
                Fault::RestartControlPlane => self.restart_control_plane().await,
                other => bail!("the reference driver does not support the fault \"{other}\" yet"),
            }
        }
        .boxed()
    }

    fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::AddNode
            | Capability::LabelNode
            | Capability::TaintNode
            | Capability::Pods
            | Capability::ReachReplica => true,
        }
    }

    fn list_nodes(&self) -> DriverFuture<'_, Vec<NodeStatus>> {
        let client = self.client();
        async move { kubeapi::list_nodes(&client).await }.boxed()
    }

    fn add_node<'a>(&'a self, spec: &'a NodeSpec) -> DriverFuture<'a, ()> {
        self.start_node(spec).boxed()
    }

    fn remove_node<'a>(&'a self, name: &'a str) -> DriverFuture<'a, ()> {
        self.stop_node(name).boxed()
    }

    fn label_node<'a>(
        &'a self,
        node: &'a str,
        key: &'a str,
        value: Option<&'a str>,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::label_node(&client, node, key, value).await }.boxed()
    }

    fn taint_node<'a>(
        &'a self,
        node: &'a str,
        taint: &'a Taint,
        present: bool,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::taint_node(&client, node, taint, present).await }.boxed()
    }

    fn run_pod<'a>(&'a self, namespace: &'a str, pod: &'a PodSpec) -> DriverFuture<'a, Admission> {
        let client = self.client();
        async move { kubeapi::run_pod(&client, namespace, pod).await }.boxed()
    }

    fn read_replica<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Option<Replica>> {
        let client = self.client();
        async move { kubeapi::read_replica(&client, namespace, name).await }.boxed()
    }

    /// The pod's IP is on the cluster's Docker bridge network, which the host reaches.
    fn request_replica<'a>(
        &'a self,
        namespace: &'a str,
        replica: &'a str,
        port: u16,
        request: &'a HttpRequest,
    ) -> DriverFuture<'a, HttpResponse> {
        let client = self.client();
        async move {
            let pod = kubeapi::read_replica(&client, namespace, replica)
                .await?
                .ok_or_else(|| anyhow!("replica {namespace}/{replica} does not exist"))?;
            let ip = pod
                .ip
                .ok_or_else(|| anyhow!("replica {namespace}/{replica} has no IP address yet"))?;
            plain_http::send(&format!("{ip}:{port}"), request).await
        }
        .boxed()
    }

    fn shut_down(&self) -> DriverFuture<'_, ()> {
        self.stop_all().boxed()
    }

    fn kube_client(&self) -> Option<kube::Client> {
        Some(self.client())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_starts_at_offset_and_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let earlier = "from an earlier start\n";
        let lines: String = (0..100).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&log, format!("{earlier}{lines}")).expect("write");
        let tail = log_tail(&log, earlier.len() as u64);
        assert!(!tail.contains("earlier"));
        assert!(tail.starts_with("line 60\n"));
        assert!(tail.contains("line 99"));
    }
}
