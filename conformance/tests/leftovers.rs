//! A run killed with SIGKILL, halfway, leaves nothing once the next run is done.
//!
//! For the `swarm` and the `reference` driver: start `shipshape-conformance certify`, wait
//! until it has made things on the Docker engine, SIGKILL it (for the reference, with one
//! node agent frozen first, as a partitioned node is, so it cannot clean up after itself),
//! run one short certification after it, and look: no service, container or network
//! carrying the kit's run label, no container of the killed cluster, no process of it, and
//! for Swarm the engine out of swarm mode again if it was before.
//!
//! The two run one after the other (a lock), as both use the one Docker engine.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One test at a time on the engine.
static ENGINE: Mutex<()> = Mutex::new(());

/// The label on everything a run of the kit makes.
const RUN_LABEL: &str = "shipshape.conformance/run";

/// How long the first run may take to make something.
const STARTUP: Duration = Duration::from_secs(120);

/// Runs `docker` with `args`; its output, trimmed.
fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run docker {args:?}: {error}; these tests need the docker command and an engine"));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Starts `certify` with `args` in the background, its output in a log.
fn start_certify(args: &[&str], report: &std::path::Path) -> Child {
    let log = std::fs::File::create(report.join("killed-run.log")).expect("log");
    Command::new(env!("CARGO_BIN_EXE_shipshape-conformance"))
        .arg("certify")
        .args(args)
        .arg("--out")
        .arg(report)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("certify starts")
}

/// Runs `certify` with `args` to its end and checks it passed.
fn certify(args: &[&str], report: &std::path::Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_shipshape-conformance"))
        .arg("certify")
        .args(args)
        .arg("--out")
        .arg(report)
        .output()
        .expect("certify runs");
    assert!(
        output.status.success(),
        "the run after the killed one failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until `ready` says yes, failing the test after [`STARTUP`].
fn wait_for(what: &str, child: &mut Child, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + STARTUP;
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(Instant::now() < deadline, "not {what} within {STARTUP:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// SIGKILLs a process.
fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

/// Where this test's reports go.
fn report_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).expect("report dir");
    dir
}

#[test]
fn a_killed_swarm_run_leaves_nothing_once_the_next_run_is_done() {
    let _engine = ENGINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let swarm_before = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    let bridge_before = docker(&["network", "ls", "-q", "--filter", "name=^docker_gwbridge$"]);
    let report = report_dir("leftovers-swarm");
    let mut run = start_certify(
        &["--driver", "swarm", "--tags", "@service-routing"],
        &report,
    );
    let label = format!("label={RUN_LABEL}");
    wait_for("a service of the run exists", &mut run, || {
        docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]) == "active"
            && !docker(&["service", "ls", "-q", "--filter", &label]).is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    kill(run.id(), "KILL");
    let _ = run.wait();
    assert!(
        !docker(&["service", "ls", "-q", "--filter", &label]).is_empty(),
        "the killed run should have left a service for this test to mean anything"
    );
    certify(
        &[
            "--driver",
            "swarm",
            "--tags",
            "@control-plane and not @kubernetes-api and not @restart-control-plane",
        ],
        &report,
    );
    if swarm_before != "active" {
        assert_eq!(
            docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]),
            "inactive",
            "the kit made the swarm, so it must have left it"
        );
    } else {
        assert_eq!(docker(&["service", "ls", "-q", "--filter", &label]), "");
    }
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &label]),
        "",
        "containers left"
    );
    assert_eq!(
        docker(&["network", "ls", "-q", "--filter", &label]),
        "",
        "networks left"
    );
    if bridge_before.is_empty() {
        assert_eq!(
            docker(&["network", "ls", "-q", "--filter", "name=^docker_gwbridge$"]),
            "",
            "the swarm's bridge is left"
        );
    }
}

#[test]
fn a_killed_reference_run_with_a_frozen_node_leaves_nothing_once_the_next_run_is_done() {
    let _engine = ENGINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let report = report_dir("leftovers-reference");
    let mut run = start_certify(
        &["--driver", "reference", "--tags", "@service-routing"],
        &report,
    );
    let pid = run.id();
    // The run's data directory names it as its owner, and lists its children.
    let mut data_dir = None;
    wait_for("the run's cluster has pods", &mut run, || {
        data_dir = std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .find(|dir| {
                dir.file_name().is_some_and(|name| {
                    name.to_string_lossy().starts_with("shipshape-conformance-")
                }) && std::fs::read_to_string(dir.join("owner.pid"))
                    .is_ok_and(|owner| owner.trim() == pid.to_string())
            });
        let Some(dir) = &data_dir else {
            return false;
        };
        let Ok(cluster) = std::fs::read_to_string(dir.join("cluster-id")) else {
            return false;
        };
        !docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=shipshape.cluster={}", cluster.trim()),
        ])
        .is_empty()
    });
    let dir = data_dir.expect("the run's data directory");
    let cluster = std::fs::read_to_string(dir.join("cluster-id"))
        .expect("cluster id")
        .trim()
        .to_owned();
    let children: Vec<u32> = std::fs::read_to_string(dir.join("children.pids"))
        .expect("children")
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    // Children are the control plane, the node agents, then the proxy: freeze a node agent.
    let frozen = *children.get(1).expect("a node agent");
    kill(frozen, "STOP");
    kill(pid, "KILL");
    let _ = run.wait();
    certify(
        &[
            "--driver",
            "reference",
            "--tags",
            "@control-plane and not @kubernetes-api and not @restart-control-plane",
        ],
        &report,
    );
    let filter = format!("label=shipshape.cluster={cluster}");
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &filter]),
        "",
        "containers of the killed cluster left"
    );
    for child in children {
        let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
        assert!(
            !cmdline.starts_with(b"shipshape\0"),
            "process {child} of the killed run still runs"
        );
    }
    assert!(
        !dir.exists(),
        "the killed run's data directory {} is left",
        dir.display()
    );
}
