//! The `reference` driver: certifies shipshape's own reference orchestrator.
//!
//! For each run it starts a fresh control plane as a real child process, on a data
//! directory of its own, and then talks to it only through the Kubernetes API, as it
//! would to any cluster. Nothing of the orchestrator is linked in besides its command
//! line (`shipshape::cli::run`), which runs in the child.
//!
//! # How the child is started
//!
//! The test binary re-executes itself (`std::env::current_exe()`) with
//! [`CHILD_ENV`] set and the command line `shipshape control-plane --data-dir DIR
//! --listen 127.0.0.1:0` (argv[0] is `shipshape`). Its `main` calls
//! [`run_reference_child_if_requested`] first, which sees the variable and runs the
//! command line instead of the harness. So the control plane under test is the very code
//! the test binary was built with, in a process of its own that can be SIGKILLed.
//!
//! The child announces itself on stdout (`apiserver: URL`, then `kubeconfig: PATH`); the
//! driver reads those lines (with a time limit), builds a client from the kubeconfig and
//! polls `/readyz`. Everything the child writes (stdout and stderr) is appended to a log
//! file, whose tail goes into the error when the child fails to start.
//!
//! # Lifetime
//!
//! The child dies with the driver: dropping the driver SIGKILLs it. Should the harness
//! itself be killed, the child notices that its stdin (a pipe the driver holds open)
//! reached end-of-file and exits too, so no control plane outlives its run.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::FutureExt as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::driver::{DeploymentSpec, Driver, DriverFuture, Fault, Replica, Revision, ServiceSpec};
use crate::kubeapi;

/// Environment variable that turns the test binary into a reference control plane.
pub const CHILD_ENV: &str = "SHIPSHAPE_CONFORMANCE_REFERENCE_CHILD";

/// How long the control plane may take to announce its kubeconfig after it is started.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the control plane may take to answer `/readyz` once it has announced itself.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between two `/readyz` polls.
const READY_POLL: Duration = Duration::from_millis(100);

/// The signal number of SIGKILL, which is what `Child::start_kill` sends on Unix.
const SIGKILL: i32 = 9;

/// How many lines of the child's log go into a start-up error.
const LOG_TAIL_LINES: usize = 40;

/// If this process was started as a reference control plane by [`ReferenceDriver`], runs
/// the `shipshape` command line and returns its exit code; otherwise returns `None`.
///
/// Call it first thing in `main`, before any runtime or argument parsing: the child's
/// arguments are `shipshape`'s, not the harness's, and `shipshape` builds its own runtime.
pub fn run_reference_child_if_requested() -> Option<ExitCode> {
    std::env::var_os(CHILD_ENV)?;
    // The parent holds our stdin open for as long as it lives; end-of-file means it is
    // gone (even if it was SIGKILLed), and a control plane nobody tests must not linger.
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buffer = [0_u8; 64];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => std::process::exit(1),
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => std::process::exit(1),
            }
        }
    });
    Some(shipshape::cli::run(std::env::args_os().collect()))
}

/// The reference orchestrator, run as a child process for the length of a test run.
pub struct ReferenceDriver {
    /// The running control plane; locked for the whole of a restart.
    control_plane: tokio::sync::Mutex<ControlPlane>,
    /// Client for the current control plane, replaced after every restart.
    client: RwLock<kube::Client>,
    /// Where the child's stdout and stderr are appended.
    log_path: PathBuf,
    /// The control plane's data directory, kept across restarts, removed on drop.
    data_dir: tempfile::TempDir,
}

/// One incarnation of the control-plane child process.
struct ControlPlane {
    /// The child process (killed on drop; its stdin pipe is held open inside).
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
    /// Starts a fresh reference control plane on a new temporary data directory, waits
    /// until it is ready, and appends its output to `log_path`.
    pub async fn start(log_path: PathBuf) -> anyhow::Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("shipshape-conformance-")
            .tempdir()
            .context("failed to create a data directory for the reference control plane")?;
        // A new run starts a new log.
        File::create(&log_path).with_context(|| {
            format!(
                "failed to create the control-plane log {}",
                log_path.display()
            )
        })?;
        let control_plane = ControlPlane::start(data_dir.path(), &log_path, 1).await?;
        Ok(Self {
            client: RwLock::new(control_plane.client.clone()),
            control_plane: tokio::sync::Mutex::new(control_plane),
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

    /// SIGKILLs the control plane, starts it again on the same data directory, and
    /// switches to a client for the new process.
    async fn restart_control_plane(&self) -> anyhow::Result<()> {
        let mut control_plane = self.control_plane.lock().await;
        if let Some(status) = control_plane
            .child
            .try_wait()
            .context("failed to check on the reference control plane")?
        {
            bail!(
                "the reference control plane had already exited ({status}) before it was killed; see {}",
                self.log_path.display()
            );
        }
        // `start_kill` is SIGKILL on Unix: no shutdown hook runs, nothing gets flushed.
        control_plane
            .child
            .start_kill()
            .context("failed to SIGKILL the reference control plane")?;
        let status = control_plane
            .child
            .wait()
            .await
            .context("failed to reap the killed reference control plane")?;
        if status.signal() != Some(SIGKILL) {
            bail!(
                "the reference control plane ended with {status} instead of being killed by SIGKILL"
            );
        }
        tracing::info!(apiserver = %control_plane.apiserver, "reference control plane killed");
        let generation = control_plane.generation + 1;
        let restarted =
            ControlPlane::start(self.data_dir.path(), &self.log_path, generation).await?;
        *self.client.write().unwrap_or_else(PoisonError::into_inner) = restarted.client.clone();
        *control_plane = restarted;
        Ok(())
    }
}

impl Drop for ReferenceDriver {
    fn drop(&mut self) {
        // Kill before the data directory is removed (fields drop after this).
        let _ = self.control_plane.get_mut().child.start_kill();
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

impl ControlPlane {
    /// Starts the child, reads its announcement, connects, and waits for `/readyz`.
    async fn start(data_dir: &Path, log_path: &Path, generation: u32) -> anyhow::Result<Self> {
        let exe =
            std::env::current_exe().context("failed to locate the test binary to re-execute")?;
        let mut log = OpenOptions::new()
            .append(true)
            .open(log_path)
            .with_context(|| {
                format!(
                    "failed to open the control-plane log {}",
                    log_path.display()
                )
            })?;
        let args: Vec<OsString> = vec![
            "control-plane".into(),
            "--data-dir".into(),
            data_dir.as_os_str().to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        writeln!(
            log,
            "=== start {generation}: shipshape {}",
            args.iter()
                .map(|arg| arg.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        )
        .context("failed to write the control-plane log")?;
        let log_start = log.stream_position().unwrap_or(0);
        let stderr = log
            .try_clone()
            .context("failed to share the control-plane log with the child")?;
        let mut child = Command::new(&exe)
            .arg0("shipshape")
            .args(&args)
            .env(CHILD_ENV, "1")
            // Its log is a file: no colour codes in it.
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "failed to start {} as the reference control plane",
                    exe.display()
                )
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("the reference control plane's stdout was not captured"))?;
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
                    "the reference control plane exited ({status}) before printing its kubeconfig; its output:\n{}",
                    log_tail(log_path, log_start)
                );
            }
            Ok(Err(error)) => {
                return Err(error.context("failed to read the reference control plane's stdout"));
            }
            Err(_) => {
                let _ = child.start_kill();
                bail!(
                    "the reference control plane did not print its kubeconfig within {ANNOUNCE_TIMEOUT:?}; its output:\n{}",
                    log_tail(log_path, log_start)
                );
            }
        };
        // Keep draining stdout, so the child never blocks on a full pipe.
        tokio::spawn(copy_lines(lines, log));

        let client = connect(&kubeconfig).await?;
        if let Err(error) = wait_ready(&client, &mut child, &apiserver).await {
            bail!("{error:#}; its output:\n{}", log_tail(log_path, log_start));
        }
        tracing::info!(%apiserver, kubeconfig = %kubeconfig.display(), generation, "reference control plane ready");
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

/// Polls `GET /readyz` until it answers 200, failing early if the child exits.
async fn wait_ready(
    client: &kube::Client,
    child: &mut Child,
    apiserver: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .context("failed to build the /readyz request")?;
        let last_error = match client.request_text(request).await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        if let Some(status) = child
            .try_wait()
            .context("failed to check on the reference control plane")?
        {
            bail!(
                "the reference control plane at {apiserver} exited ({status}) before it was ready"
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the reference control plane at {apiserver} was not ready within {READY_TIMEOUT:?}; last /readyz answer: {last_error}"
            );
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// The last lines the child wrote to the log since `start`.
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
        let serving = match self.control_plane.try_lock() {
            Ok(control_plane) => format!(
                "at {}, kubeconfig {}",
                control_plane.apiserver,
                control_plane.kubeconfig.display()
            ),
            Err(_) => "restarting".to_owned(),
        };
        format!(
            "shipshape reference control plane, a child process {serving}; data in {}, log in {}",
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
