//! # Fail points: decisions a test build can turn wrong
//!
//! A conformance kit is worth what it catches. To show what the kit's features catch, the
//! kit builds the reference with *fail points* and switches them one at a time: each
//! makes one decision the features promise go wrong — a controller that counts a pod it
//! should not, a scheduler that forgets a taint, an agent that never restarts a container
//! — and the features must notice (`conformance/mutants.toml` lists them, with the promise
//! each breaks; `shipshape-conformance mutants` runs them).
//!
//! A fail point is one macro, [`on!`], at the place the decision is made:
//!
//! ```ignore
//! if terminating(&pod.metadata) && !failpoints::on!("replicaset::count-terminating-pods") {
//!     continue;
//! }
//! ```
//!
//! In a normal build (without the `failpoints` feature) [`on!`] expands to `false`: the
//! branch and the point's name are compiled away, and the `fail` crate is not even linked
//! — `tests/failpoints.rs` checks the built binary for every point's name. With the feature, points are
//! switched by the `FAILPOINTS` environment variable (`name=return;other=return`), read
//! once when the process starts ([`setup`]), so one build serves every mutant.

/// Whether the fail point `$name` is switched on: `failpoints::on!("name")`.
///
/// A macro rather than a function so that, without the `failpoints` feature, it expands
/// to the bare `false` — not even the point's name reaches the binary, in a debug build
/// as in a release one.
#[cfg(feature = "failpoints")]
macro_rules! on {
    ($name:literal) => {
        $crate::failpoints::eval($name)
    };
}

/// Whether the fail point `$name` is switched on: `false`, in this build without the
/// `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
macro_rules! on {
    ($name:literal) => {
        false
    };
}

pub(crate) use on;

/// Whether the fail point `name` is switched on (what [`on!`] asks, with the feature).
#[cfg(feature = "failpoints")]
pub fn eval(name: &'static str) -> bool {
    fail::eval(name, |_| ()).is_some()
}

/// The environment variables that switch fail points on, for a process that starts
/// another without passing its whole environment (a container): `FAILPOINTS` in a build
/// with the feature, none in one without — where the name must not reach the binary.
pub fn variables() -> &'static [&'static str] {
    #[cfg(feature = "failpoints")]
    {
        &["FAILPOINTS"]
    }
    #[cfg(not(feature = "failpoints"))]
    {
        &[]
    }
}

/// Reads `FAILPOINTS` and switches the points it names on, for the life of the process
/// (a no-op without the `failpoints` feature). Call it once, first thing.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    {
        // The scenario would tear the points down when dropped; this process keeps them.
        std::mem::forget(fail::FailScenario::setup());
        if let Ok(points) = std::env::var("FAILPOINTS")
            && !points.is_empty()
        {
            tracing::warn!(%points, "fail points switched on: this process misbehaves on purpose");
        }
    }
}
