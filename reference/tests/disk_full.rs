//! # A control plane whose disk fills up
//!
//! The control plane keeps its data on a small tmpfs of its own, mounted in a mount
//! namespace made for it (`unshare`), so that nothing is left mounted on the host when it
//! ends; this test reaches the tmpfs through `/proc/PID/root`. A file fills the disk to
//! the last byte while the control plane takes writes.
//!
//! Checked: the control plane refuses the write it cannot make durable with a 503 that says
//! the disk is full, and `/readyz` says so too, rather than failing or acknowledging what
//! it cannot keep; once the file is removed it takes writes again on its own, without a
//! restart; and every write it acknowledged before, during and after is there.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PostParams};
use tokio::io::AsyncBufReadExt as _;

mod eventually;
use eventually::eventually;

/// The size of the control plane's disk.
const DISK: &str = "16m";

/// A control plane whose data directory is a tmpfs in a mount namespace of its own.
struct ControlPlaneOnTmpfs {
    child: tokio::process::Child,
    /// The data directory, as this process reaches it (through `/proc/PID/root`).
    dir: PathBuf,
    _root: tempfile::TempDir,
}

impl ControlPlaneOnTmpfs {
    async fn start() -> ControlPlaneOnTmpfs {
        let root = tempfile::tempdir().expect("a temporary directory");
        let data = root.path().join("data");
        std::fs::create_dir(&data).expect("the mount point");
        let script = format!(
            "mount -t tmpfs -o size={DISK} tmpfs '{dir}' && exec '{exe}' control-plane \
             --data-dir '{dir}' --listen 127.0.0.1:0",
            dir = data.display(),
            exe = env!("CARGO_BIN_EXE_shipshape"),
        );
        let mut child = tokio::process::Command::new("unshare")
            .args(["--map-root-user", "--mount", "--propagation", "private"])
            .args(["sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("this test mounts a tmpfs in a mount namespace of its own and needs `unshare` (util-linux): {e}")
            });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let announced = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("apiserver: ") {
                    return true;
                }
            }
            false
        })
        .await;
        if announced != Ok(true) {
            let status = child.try_wait().ok().flatten();
            panic!(
                "the control plane on a tmpfs did not start ({status:?}); mounting a tmpfs in a \
                 mount namespace of its own (`unshare --map-root-user --mount`) needs user \
                 namespaces or root"
            );
        }
        let pid = child.id().expect("a running control plane");
        let dir = Path::new(&format!("/proc/{pid}/root"))
            .join(data.strip_prefix("/").expect("an absolute path"));
        ControlPlaneOnTmpfs {
            child,
            dir,
            _root: root,
        }
    }

    async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.dir.join("kubeconfig"))
            .expect("the control plane's kubeconfig");
        let mut config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("a usable kubeconfig");
        // Every answer counts here: no quiet retries of a 503.
        config.default_retry = false;
        kube::Client::try_from(config).expect("a client")
    }
}

fn namespace(name: &str) -> Namespace {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("a namespace")
}

/// Writes a file that takes every byte left on the disk at `dir`.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("the filler file");
    let block = vec![0u8; 64 * 1024];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the disk failed: {e}"),
        }
    }
    // The last bytes of a page.
    while file.write(&[0]).is_ok_and(|n| n == 1) {}
    path
}

/// The body of `/readyz`, and whether it answered 200.
async fn readyz(client: &kube::Client) -> (bool, String) {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .expect("a request");
    match client.send(request.map(Into::into)).await {
        Ok(response) => {
            let ok = response.status().is_success();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            (ok, body)
        }
        Err(e) => (false, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_clearly_and_takes_them_again_once_there_is_space() {
    let mut control_plane = ControlPlaneOnTmpfs::start().await;
    let client = control_plane.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let name = format!("before-{i}");
        namespaces
            .create(&PostParams::default(), &namespace(&name))
            .await
            .expect("a write while there is space");
        acknowledged.push(name);
    }

    let filler = fill(&control_plane.dir);
    let mut refusal = None;
    for i in 0..2000 {
        let name = format!("while-full-{i}");
        match namespaces
            .create(&PostParams::default(), &namespace(&name))
            .await
        {
            Ok(_) => acknowledged.push(name),
            // In flight when the disk filled: its fate is unknown, and the answer says so.
            Err(kube::Error::Api(status))
                if status.code == 504 && status.message.contains("disk is full") => {}
            Err(kube::Error::Api(status)) => {
                refusal = Some(status);
                break;
            }
            Err(e) => panic!("the control plane failed instead of refusing the write: {e}"),
        }
    }
    let refusal = refusal.expect("the control plane refuses writes once its disk is full");
    assert_eq!(refusal.code, 503, "{refusal:?}");
    assert!(
        refusal.message.contains("disk is full"),
        "the refusal does not say why: {:?}",
        refusal.message
    );
    let (ready, why) = readyz(&client).await;
    assert!(
        !ready && why.contains("disk is full"),
        "/readyz answers {ready} {why:?} with a full disk"
    );

    std::fs::remove_file(&filler).expect("the filler file is removed");
    eventually(
        Duration::from_secs(30),
        "a write once there is space again",
        || async {
            namespaces
                .create(&PostParams::default(), &namespace("after"))
                .await
                .ok()
        },
    )
    .await;
    acknowledged.push("after".to_owned());
    assert!(readyz(&client).await.0, "/readyz after the disk recovered");

    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("a list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for name in &acknowledged {
        assert!(names.contains(name), "{name} was acknowledged and is lost");
    }
    let _ = control_plane.child.kill().await;
}
