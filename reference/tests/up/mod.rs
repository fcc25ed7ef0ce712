//! Starting `shipshape up` as a user runs it, for tests that need a whole cluster.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// Starts `shipshape up` on data directory `dir`, listening on a free loopback port, with
/// `args` added; waits up to `limit` until it announces its API server. Returns the
/// process (killed when dropped) and the URL. Its output goes to `dir/up.log`, whose end
/// a failure shows.
pub async fn start_up(
    dir: &Path,
    args: &[&str],
    limit: Duration,
) -> (tokio::process::Child, String) {
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_shipshape"))
        .arg("up")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("up.log")).expect("up's log"),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("shipshape up starts");
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let url = tokio::time::timeout(limit, async {
        while let Some(line) = lines.next_line().await.expect("reads stdout") {
            if let Some(url) = line.strip_prefix("apiserver: ") {
                return url.to_owned();
            }
        }
        let log = std::fs::read_to_string(dir.join("up.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        panic!(
            "shipshape up exited without serving; the end of its output:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    })
    .await
    .unwrap_or_else(|_| panic!("shipshape up did not serve within {limit:?}"));
    (up, url)
}
