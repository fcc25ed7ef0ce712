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
//! | `shipshape/machine:latest` | a `shipshape` binary mounted at `/shipshape` ([`ensure_machine`]) |
//!
//! [`ensure`] builds whichever is missing or stale by *importing* a one-file root
//! filesystem (Docker's `import`, with the image config given as changes: `ENV`,
//! `ENTRYPOINT`, `LABEL`) — one API call per image, no build steps, no base image, no
//! registry. An image carries a label with the hash of what it was made from, so a second
//! call costs one `inspect` per image.

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

/// The image a control-plane member runs in when machines are containers.
pub const MACHINE_IMAGE: &str = "shipshape/machine:latest";

/// Where a machine container finds the `shipshape` binary (mounted read-only).
pub const MACHINE_BINARY: &str = "/shipshape";

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

/// A probe image, serving on 8080, configured by `env`.
const fn probe(name: &'static str, env: &'static [(&'static str, &'static str)]) -> Spec {
    Spec {
        name,
        program: "probe",
        binary: PROBE,
        env,
        expose: Some(8080),
    }
}

const SPECS: &[Spec] = &[
    probe(PROBE_IMAGES[0], &[("PROBE_VERSION", "v1")]),
    probe(PROBE_IMAGES[1], &[("PROBE_VERSION", "v2")]),
    probe(
        PROBE_IMAGES[2],
        &[("PROBE_VERSION", "broken"), ("PROBE_BROKEN", "1")],
    ),
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

/// A root filesystem holding only `files` (path, contents), executable, as a tar archive.
fn root_fs<'a>(
    files: impl IntoIterator<Item = (&'a std::path::Path, &'a [u8])>,
) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        tar.append_data(&mut header, path.strip_prefix("/").unwrap_or(path), bytes)?;
    }
    tar.into_inner()
}

/// Builds every image that is missing or was built from other inputs.
pub async fn ensure(docker: &Docker) -> Result<(), ImageError> {
    for spec in SPECS {
        let changes = changes(spec);
        let hash = fnv1a(&[changes.join("\n").as_bytes(), spec.binary]);
        let build = || {
            let file = (std::path::Path::new(spec.program), spec.binary);
            root_fs([file]).map_err(|source| ImageError::Context {
                image: spec.name.to_owned(),
                source,
            })
        };
        import_if_stale(docker, spec.name, changes, &hash, build).await?;
    }
    Ok(())
}

/// Imports `name` from the root filesystem `build` packs, with `changes`, unless the
/// image there was made from the inputs hashed as `hash`.
async fn import_if_stale(
    docker: &Docker,
    name: &str,
    mut changes: Vec<String>,
    hash: &str,
    build: impl FnOnce() -> Result<Vec<u8>, ImageError>,
) -> Result<(), ImageError> {
    let inspected = docker.inspect_image(name).await.ok();
    let labels = inspected.and_then(|i| i.config?.labels);
    let current = labels.and_then(|l| l.get(HASH_LABEL).cloned());
    if current.as_deref() == Some(hash) {
        return Ok(());
    }
    tracing::info!(image = name, "building image");
    changes.push(format!("LABEL {HASH_LABEL}={hash}"));
    let tar = build()?;
    let (repo, tag) = name.split_once(':').unwrap_or((name, "latest"));
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.to_owned()),
        tag: Some(tag.to_owned()),
        changes,
        ..Default::default()
    };
    let mut stream = docker.create_image(Some(options), Some(bollard::body_full(tar.into())), None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| ImageError::Build {
            image: name.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(detail) = info.error_detail {
            return Err(ImageError::Build {
                image: name.to_owned(),
                message: detail.message.unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// Builds [`MACHINE_IMAGE`] for `binary` if needed: `FROM scratch`, holding the dynamic
/// loader and the shared libraries `binary` links (as `ldd` lists them, at the same
/// paths), and nothing else — the binary itself is mounted at [`MACHINE_BINARY`] when a
/// container starts, so the image stays the same while the binary changes with every
/// build. (A static `shipshape` would need the whole dependency tree compiled a second
/// time, with `crt-static`; four libraries are the cheaper way to a container of its own.)
pub async fn ensure_machine(docker: &Docker, binary: &std::path::Path) -> Result<(), ImageError> {
    let context = |source| ImageError::Context {
        image: MACHINE_IMAGE.to_owned(),
        source,
    };
    let libraries = shared_libraries(binary).map_err(context)?;
    let mut contents = Vec::new();
    for path in &libraries {
        contents.push(std::fs::read(path).map_err(context)?);
    }
    let changes = vec![format!("ENTRYPOINT [\"{MACHINE_BINARY}\"]")];
    let mut parts: Vec<&[u8]> = vec![changes[0].as_bytes()];
    for (path, bytes) in libraries.iter().zip(&contents) {
        parts.push(path.as_os_str().as_encoded_bytes());
        parts.push(bytes);
    }
    let hash = fnv1a(&parts);
    let files = libraries.iter().map(|path| path.as_path());
    let build = || root_fs(files.zip(contents.iter().map(Vec::as_slice))).map_err(context);
    import_if_stale(docker, MACHINE_IMAGE, changes, &hash, build).await
}

/// The shared libraries and the loader `binary` needs, as absolute paths, from `ldd`.
fn shared_libraries(binary: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let output = std::process::Command::new("ldd").arg(binary).output()?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(libraries_in(&String::from_utf8_lossy(&output.stdout)))
}

/// The absolute paths in `ldd`'s output: `libc.so.6 => /lib/.../libc.so.6 (0x...)`, and the
/// loader on a line of its own; the vDSO, which the kernel provides, has none.
fn libraries_in(ldd: &str) -> Vec<std::path::PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, after)) => after.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/')
                .then(|| std::path::PathBuf::from(path))
        })
        .collect()
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
    fn a_machine_carries_the_loader_and_the_libraries_ldd_names() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let paths: Vec<String> = libraries_in(ldd)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
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
