//! Cutting the links between machines that are containers: packet filters in a
//! container's own network namespace.
//!
//! A link is cut by two rules in the filter table of the container's network namespace —
//! drop what comes in from the peer's address, drop what goes out to it — entered from
//! this host with `nsenter --net=/proc/PID/ns/net iptables …`. Nothing outside the
//! container changes: other links of the same container (to this host, to clients) keep
//! working, which is what makes it a partition and not a crash. Healing deletes exactly
//! the rules that were added. A container started again has a fresh namespace, without
//! them.
//!
//! It takes `nsenter` and `iptables` on this host and the right to enter another
//! process's namespace (root, or `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`);
//! [`unavailable`] says what is missing, for the report.

use std::net::IpAddr;

use anyhow::{Context as _, bail};

/// Why links cannot be cut on this machine, or `None` if they can.
pub fn unavailable() -> Option<String> {
    for tool in ["nsenter", "iptables"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "cutting a link takes `{tool}` on this machine, and it is not there"
            ));
        }
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            Some(line.split_whitespace().nth(2)? == "0")
        })
        .unwrap_or(false);
    if !root {
        return Some(
            "cutting a link enters a container's network namespace, which takes root".to_owned(),
        );
    }
    None
}

/// The links of one container cut off from some peers: what [`heal`] undoes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The container's main process, as this host sees it.
    pub pid: u32,
    /// The peers it no longer reaches, nor they it.
    pub peers: Vec<IpAddr>,
}

/// The iptables arguments of the rules that cut `peer` off, without the action.
fn rules(peer: IpAddr) -> [[String; 6]; 2] {
    let peer = peer.to_string();
    [
        ["INPUT", "-s", &peer, "-j", "DROP", "-w"].map(str::to_owned),
        ["OUTPUT", "-d", &peer, "-j", "DROP", "-w"].map(str::to_owned),
    ]
}

/// Runs `iptables ACTION RULE…` in the network namespace of `pid`.
async fn iptables(pid: u32, action: &str, rule: &[String]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("iptables")
        .arg(action)
        .args(rule)
        .output()
        .await
        .context("failed to run nsenter")?;
    if !output.status.success() {
        bail!(
            "iptables {action} {} in the network namespace of process {pid} failed: {}",
            rule.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Cuts the container whose main process is `pid` off from `peers`, both ways.
pub async fn cut(pid: u32, peers: Vec<IpAddr>) -> anyhow::Result<Cut> {
    let cut = Cut { pid, peers };
    for peer in &cut.peers {
        for rule in rules(*peer) {
            if let Err(error) = iptables(pid, "-I", &rule).await {
                // Leave nothing half cut.
                let _ = heal(&cut).await;
                return Err(error);
            }
        }
    }
    Ok(cut)
}

/// Removes the rules [`cut`] added. A container whose process is gone (it was started
/// again, in a new namespace) is healed already.
pub async fn heal(cut: &Cut) -> anyhow::Result<()> {
    if !std::path::Path::new(&format!("/proc/{}/ns/net", cut.pid)).exists() {
        return Ok(());
    }
    let mut failures = Vec::new();
    for peer in &cut.peers {
        for rule in rules(*peer) {
            // A rule that is not there (the cut failed half-way) is not an error.
            if let Err(error) = iptables(cut.pid, "-D", &rule).await
                && !error.to_string().contains("does a matching rule exist")
                && !error.to_string().contains("Bad rule")
            {
                failures.push(error.to_string());
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("failed to restore links: {}", failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_drops_both_ways_and_only_the_peer() {
        let [incoming, outgoing] = rules([172, 18, 0, 5].into());
        assert_eq!(incoming.join(" "), "INPUT -s 172.18.0.5 -j DROP -w");
        assert_eq!(outgoing.join(" "), "OUTPUT -d 172.18.0.5 -j DROP -w");
    }
}
