//! What a killed run leaves behind, and how the next run clears it.
//!
//! Every run has an id, `<seconds>-<host>-<pid>` (when it started, the first letters of
//! the machine's name, its process id), and everything it makes on a system — a Kubernetes
//! namespace, a Swarm service, network or container — carries the label
//! [`RUN_LABEL`](crate::kubeapi::RUN_LABEL) with that id. A run that ends cleans up after
//! itself; a run that is killed (SIGKILL, a CI timeout) cannot. So a driver, as it starts,
//! removes what carries the label of a run whose process is gone ([`is_dead`]) — never what
//! a run still going made, which may be another run on the same machine, or a run on
//! another machine certifying the same cluster (whose processes this one cannot see).

/// How many letters of the machine's name go into a run id: enough to tell machines
/// apart, few enough that names made from the id stay within DNS's 63 characters.
const HOST_LETTERS: usize = 8;

/// The id of a run started at `seconds` (since the epoch) by process `pid` on this machine.
pub fn run_id(seconds: u64, pid: u32) -> String {
    format!("{seconds}-{}-{pid}", this_host())
}

/// This machine's name as run ids carry it: lower-case letters and digits only.
fn this_host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(HOST_LETTERS)
        .collect();
    if host.is_empty() {
        "host".to_owned()
    } else {
        host
    }
}

/// Whether the run of this id is over: made on this machine, and its process no longer
/// exists. A run of another machine is never judged over; an id that does not parse is
/// (nothing alive makes such ids); a process id reused by another program since keeps a
/// dead run's leftovers for one more run, which is harmless.
pub fn is_dead(run_id: &str) -> bool {
    let mut parts = run_id.rsplitn(3, '-');
    let (Some(pid), Some(host)) = (parts.next(), parts.next()) else {
        return true;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return true;
    };
    if host != this_host() {
        return false;
    }
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_alive_while_its_process_is() {
        let host = this_host();
        assert!(!is_dead(&run_id(1_795_805_322, std::process::id())));
        // The parent of this test (cargo or a shell) is alive too.
        let parent = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| stat.split_whitespace().nth(3).map(str::to_owned))
            .expect("the parent's pid");
        assert!(!is_dead(&format!("1-{host}-{parent}")));
        // No process has this id (the kernel's limit is 2^22).
        assert!(is_dead(&format!("1795805322-{host}-99999999")));
        assert!(is_dead("not a run id"));
        // Another machine's run is never judged over from here.
        assert!(!is_dead("1795805322-elsewhere-99999999"));
    }
}
