//! The kit's probe images, for systems whose nodes do not share the local Docker engine.
//!
//! The probe (`conformance/probe/probe.rs`) is the workload every scenario runs, in three
//! versions: `shipshape/probe:v1`, `:v2`, and `:broken` (exits at start). They are built
//! on this machine from static binaries, never pulled ([`shipshape::images`]). A system
//! whose nodes run on the local engine finds them there; for any other,
//! `shipshape-conformance images --save DIR` writes them as `docker save` archives to
//! load into the nodes (`kind load image-archive`, `k3d image import`, `ctr images
//! import`) or to push to a registry the cluster pulls from.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

/// The local name of the probe image of a version (`v1`, `v2`, `broken`).
pub fn local_probe(version: &str) -> String {
    format!("shipshape/probe:{version}")
}

/// Builds the probe images if needed and writes each as a `docker save` archive into
/// `dir` (created if missing); returns each image with the file it went to.
pub async fn save(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let docker = shipshape::agent::runtime::connect()
        .await
        .context("the probe images are built with the local Docker engine")?;
    shipshape::images::ensure(&docker).await?;
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("failed to create {}", dir.display()))?;
    let mut written = Vec::new();
    for image in shipshape::images::PROBE_IMAGES {
        let path = dir.join(format!("{}.tar", image.replace(['/', ':'], "-")));
        let mut file = tokio::fs::File::create(&path)
            .await
            .with_context(|| format!("failed to create {}", path.display()))?;
        let mut archive = docker.export_image(image);
        while let Some(chunk) = archive.next().await {
            let chunk = chunk.with_context(|| format!("failed to export {image}"))?;
            file.write_all(&chunk)
                .await
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
        file.flush()
            .await
            .with_context(|| format!("failed to write {}", path.display()))?;
        written.push((image.to_owned(), path));
    }
    Ok(written)
}

/// How to get the saved archives to a cluster's nodes, and how to point the kit at them.
pub fn how_to_load(written: &[(String, PathBuf)]) -> String {
    let files: Vec<String> = written
        .iter()
        .map(|(_, path)| path.display().to_string())
        .collect();
    let mut text = String::from("To load them into the nodes of a local cluster:\n");
    text.push_str(&format!("  kind load image-archive {}\n", files.join(" ")));
    text.push_str(&format!("  k3d image import {}\n", files.join(" ")));
    text.push_str(
        "  (or, on each node: ctr -n k8s.io images import FILE, or docker load -i FILE)\n",
    );
    text.push_str("To push them to a registry your cluster pulls from:\n");
    for (image, path) in written {
        let (_, tag) = image.split_once(':').unwrap_or((image, "latest"));
        text.push_str(&format!(
            "  docker load -i {} && docker tag {image} REGISTRY/shipshape/probe:{tag} && docker push REGISTRY/shipshape/probe:{tag}\n",
            path.display()
        ));
    }
    text.push_str(
        "then certify with --image-prefix REGISTRY/ (or SHIPSHAPE_PROBE_IMAGE_V1, _V2, _BROKEN).",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instructions_name_every_archive_and_the_prefix() {
        let written = vec![
            (
                "shipshape/probe:v1".to_owned(),
                PathBuf::from("/tmp/i/shipshape-probe-v1.tar"),
            ),
            (
                "shipshape/probe:broken".to_owned(),
                PathBuf::from("/tmp/i/shipshape-probe-broken.tar"),
            ),
        ];
        let text = how_to_load(&written);
        assert!(text.contains(
            "kind load image-archive /tmp/i/shipshape-probe-v1.tar /tmp/i/shipshape-probe-broken.tar"
        ));
        assert!(text.contains("docker tag shipshape/probe:broken REGISTRY/shipshape/probe:broken"));
        assert!(text.contains("--image-prefix"));
    }
}
