//! Timing profiles: how long a system promises to take to notice a failed machine, and to
//! act on it.
//!
//! Most bounds in the features are the same for every system ("within 30 seconds 3
//! replicas are running"): they leave room for work any orchestrator does in seconds. Two
//! are not work but *promises* an operator configures, and systems differ by minutes:
//!
//! - the **node grace period**: how long a node may stay silent before the control plane
//!   declares it unreachable and its replicas' phase `Unknown` (Kubernetes:
//!   `--node-monitor-grace-period`, 50 s by default since 1.32; the reference: `--node-grace-seconds`,
//!   4 s);
//! - the **eviction delay**: how long after that the replicas of an unreachable node are
//!   replaced elsewhere (Kubernetes: the default toleration of `node.kubernetes.io/
//!   unreachable` and `not-ready`, 300 s; the reference: `--eviction-seconds`, 2 s).
//!
//! Steps that wait for these name them: "within the node grace period and 10 more
//! seconds". The profile says how long each is; the step waits exactly that much plus the
//! seconds it names, never more, and the report prints the profile with the measured
//! times. The kit's default profile ([`Profile::default`]) is what the reference promises;
//! `profiles/kubernetes-defaults.toml` is upstream Kubernetes'. A profile is a TOML file:
//!
//! ```toml
//! name = "kubernetes-defaults"
//! description = "upstream Kubernetes defaults (1.32 and later)"
//!
//! [timings]
//! node-grace-seconds = 50
//! eviction-seconds = 300
//! ```

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// A system's promised timings, and the name they go by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// A short name, shown in reports.
    pub name: String,
    /// What the profile stands for.
    #[serde(default)]
    pub description: String,
    /// The timings.
    pub timings: Timings,
}

/// The promised timings of a profile, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Timings {
    /// How long a silent node may go unnoticed.
    pub node_grace_seconds: u64,
    /// How long after that its replicas are replaced.
    pub eviction_seconds: u64,
}

impl Default for Profile {
    /// The kit's defaults: what the reference promises (`--node-grace-seconds 4`,
    /// `--eviction-seconds 2`).
    fn default() -> Self {
        Self {
            name: "kit-defaults".to_owned(),
            description: "the kit's defaults, as the reference orchestrator promises them"
                .to_owned(),
            timings: Timings {
                node_grace_seconds: 4,
                eviction_seconds: 2,
            },
        }
    }
}

impl Profile {
    /// Reads a profile from a TOML file; says what is wrong with it, if anything.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the profile {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("the profile {} is not valid", path.display()))
    }

    /// Parses a profile from TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let profile: Profile = toml::from_str(text)?;
        if profile.name.trim().is_empty() {
            anyhow::bail!("the profile needs a name");
        }
        Ok(profile)
    }

    /// The timings in a few words.
    pub fn describe(&self) -> String {
        format!(
            "node grace period {} s, eviction delay {} s{}",
            self.timings.node_grace_seconds,
            self.timings.eviction_seconds,
            if self.description.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.description)
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profiles_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let upstream = Profile::load(&dir.join("kubernetes-defaults.toml")).expect("parses");
        assert_eq!(upstream.timings.node_grace_seconds, 50);
        assert_eq!(upstream.timings.eviction_seconds, 300);
        let kit = Profile::load(&dir.join("kit-defaults.toml")).expect("parses");
        assert_eq!(kit, Profile::default());
    }

    #[test]
    fn a_bad_profile_says_what_is_wrong() {
        let unknown = Profile::parse(
            "name = \"x\"\n[timings]\nnode-grace-seconds = 1\neviction-seconds = 2\nspeed = 3\n",
        )
        .expect_err("unknown field");
        assert!(format!("{unknown:#}").contains("speed"), "{unknown:#}");
        let missing = Profile::parse("name = \"x\"\n[timings]\nnode-grace-seconds = 1\n")
            .expect_err("missing");
        assert!(
            format!("{missing:#}").contains("eviction-seconds"),
            "{missing:#}"
        );
        assert!(
            Profile::parse(
                "name = \"\"\n[timings]\nnode-grace-seconds = 1\neviction-seconds = 2\n"
            )
            .is_err()
        );
    }
}
