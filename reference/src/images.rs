//! # Images, built here and never pulled
//!
//! No registry is ever contacted. The images the kit and the reference run are built from
//! static binaries this crate carries (compiled by `build.rs` from `conformance/probe/`),
//! each `FROM scratch`:
//!
//! | image | what runs |
//! |---|---|
//! | `shipshape/probe:v1`, `shipshape/probe:v2` | the probe workload, reporting its version |
//! | `shipshape/probe:broken` | the probe, told to exit 1 at start |
//! | `shipshape/pause:latest` | `pause`, which holds a pod's network namespace |
//!
//! [`ensure`] builds whichever is missing or stale by *importing* a one-file root
//! filesystem (Docker's `import`, with the image config given as changes: `ENV`,
//! `ENTRYPOINT`, `LABEL`) — one API call per image, no build steps, no base image, no
//! registry. An image carries a label with the hash of what it was made from, so a second
//! call costs one `inspect` per image.

use std::io::Write as _;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;

/// The probe binary, static.
const PROBE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe"));
/// The pause binary, static.
const PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// The pause image every pod's sandbox runs.
pub const PAUSE_IMAGE: &str = "shipshape/pause:latest";

/// The probe images the conformance kit runs, one per version of the workload.
pub const PROBE_IMAGES: [&str; 3] = [
    "shipshape/probe:v1",
    "shipshape/probe:v2",
    "shipshape/probe:broken",
];

/// The label holding the hash of an image's inputs.
const HASH_LABEL: &str = "shipshape.image-hash";

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Docker refused or failed.
    #[error("failed to build image {image}: {message}")]
    Build {
        /// The image.
        image: String,
        /// What Docker said.
        message: String,
    },
    /// The root filesystem could not be packed.
    #[error("failed to pack the root filesystem of {image}: {source}")]
    Context {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

struct Spec {
    name: &'static str,
    program: &'static str,
    binary: &'static [u8],
    env: &'static [(&'static str, &'static str)],
    expose: Option<u16>,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "shipshape/probe:v1",
        program: "probe",
        binary: PROBE,
        env: &[("PROBE_VERSION", "v1")],
        expose: Some(8080),
    },
    Spec {
        name: "shipshape/probe:v2",
        program: "probe",
        binary: PROBE,
        env: &[("PROBE_VERSION", "v2")],
        expose: Some(8080),
    },
    Spec {
        name: "shipshape/probe:broken",
        program: "probe",
        binary: PROBE,
        env: &[("PROBE_VERSION", "broken"), ("PROBE_BROKEN", "1")],
        expose: Some(8080),
    },
    Spec {
        name: PAUSE_IMAGE,
        program: "pause",
        binary: PAUSE,
        env: &[],
        expose: None,
    },
];

/// FNV-1a, 64 bits: stable across builds and platforms (unlike std's hasher).
fn fnv1a(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The image config, as `import` changes (Dockerfile instructions).
fn changes(spec: &Spec) -> Vec<String> {
    let mut changes: Vec<String> = spec
        .env
        .iter()
        .map(|(k, v)| format!("ENV {k}={v}"))
        .collect();
    if let Some(port) = spec.expose {
        changes.push(format!("EXPOSE {port}"));
    }
    changes.push(format!("ENTRYPOINT [\"/{}\"]", spec.program));
    changes
}

/// A root filesystem holding only the binary, as a tar archive.
fn root_fs(spec: &Spec) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(spec.binary.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, spec.program, spec.binary)?;
    let mut out = tar.into_inner()?;
    out.flush()?;
    Ok(out)
}

/// Builds every image that is missing or was built from other inputs.
pub async fn ensure(docker: &Docker) -> Result<(), ImageError> {
    for spec in SPECS {
        let mut changes = changes(spec);
        let hash = fnv1a(&[changes.join("\n").as_bytes(), spec.binary]);
        let current = docker
            .inspect_image(spec.name)
            .await
            .ok()
            .and_then(|i| i.config)
            .and_then(|c| c.labels)
            .and_then(|l| l.get(HASH_LABEL).cloned());
        if current.as_deref() == Some(hash.as_str()) {
            continue;
        }
        tracing::info!(image = spec.name, "building image");
        changes.push(format!("LABEL {HASH_LABEL}={hash}"));
        let tar = root_fs(spec).map_err(|source| ImageError::Context {
            image: spec.name.to_owned(),
            source,
        })?;
        let (repo, tag) = spec.name.split_once(':').unwrap_or((spec.name, "latest"));
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            changes,
            ..Default::default()
        };
        let mut stream =
            docker.create_image(Some(options), Some(bollard::body_full(tar.into())), None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| ImageError::Build {
                image: spec.name.to_owned(),
                message: e.to_string(),
            })?;
            if let Some(detail) = info.error_detail {
                return Err(ImageError::Build {
                    image: spec.name.to_owned(),
                    message: detail.message.unwrap_or_default(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binaries_are_embedded_and_static() {
        let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
        for bin in [PROBE, PAUSE] {
            assert_eq!(&bin[..4], b"\x7fELF");
            // A static binary has no PT_INTERP (type 3) program header naming a loader.
            let phoff = u64::from_le_bytes(bin[0x20..0x28].try_into().expect("8 bytes")) as usize;
            let (size, count) = (u16_at(bin, 0x36), u16_at(bin, 0x38));
            assert!(count > 0);
            for i in 0..count {
                let at = phoff + i * size;
                let p_type = u32::from_le_bytes(bin[at..at + 4].try_into().expect("4 bytes"));
                assert_ne!(p_type, 3, "the binary asks for a dynamic loader");
            }
        }
    }

    #[test]
    fn image_inputs_hash_stably() {
        let spec = &SPECS[0];
        let inputs = |s: &Spec| changes(s).join("\n");
        let a = fnv1a(&[inputs(spec).as_bytes(), spec.binary]);
        assert_eq!(a, fnv1a(&[inputs(spec).as_bytes(), spec.binary]));
        assert_ne!(a, fnv1a(&[inputs(&SPECS[1]).as_bytes(), SPECS[1].binary]));
    }
}
