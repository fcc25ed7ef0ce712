//! Normal builds carry no fail points.
//!
//! The reference's fail points (`src/failpoints.rs`) let the conformance kit turn its
//! decisions wrong on purpose; they must never be in a build a user runs. This test reads
//! every point's name from the source — each `failpoints::on!("name")` — and looks for it
//! in the `shipshape` binary cargo built for the tests: in a normal build none may be
//! there, and neither may the `FAILPOINTS` variable the `fail` crate reads. Built with
//! `--features failpoints`, the same test checks the opposite — every name is there — which
//! shows that the search finds what it looks for.

use std::path::{Path, PathBuf};

/// Every fail point's name in the reference's source.
fn fail_point_names() -> Vec<String> {
    let mut names = Vec::new();
    let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("the source directory is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") && !is_the_module(&path) {
                let text = std::fs::read_to_string(&path).expect("a source file");
                for (at, marker) in text.match_indices("failpoints::on!(\"") {
                    let rest = &text[at + marker.len()..];
                    let name = &rest[..rest.find('"').expect("a closing quote")];
                    names.push(name.to_owned());
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The module that defines the points, whose documentation names one as an example.
fn is_the_module(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name == "failpoints.rs")
}

#[test]
fn the_binary_has_fail_points_only_when_built_with_them() {
    let names = fail_point_names();
    assert!(
        names.len() >= 20,
        "found only {} fail points in the source: {names:?}",
        names.len()
    );
    let bytes = std::fs::read(env!("CARGO_BIN_EXE_shipshape")).expect("the built binary");
    // The binary's text — its runs of valid UTF-8 long enough to hold a name — so that the
    // search is the standard library's, which is optimized even in a test build.
    let binary: String = bytes
        .utf8_chunks()
        .map(|chunk| chunk.valid())
        .filter(|text| text.len() >= 8)
        .collect::<Vec<_>>()
        .join("\n");
    let present: Vec<&String> = names
        .iter()
        .filter(|name| binary.contains(name.as_str()))
        .collect();
    if cfg!(feature = "failpoints") {
        let missing: Vec<&String> = names.iter().filter(|n| !present.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "built with fail points, yet the binary lacks {missing:?}"
        );
        assert!(binary.contains("FAILPOINTS"));
    } else {
        assert!(
            present.is_empty(),
            "a normal build carries the fail points {present:?}"
        );
        assert!(
            !binary.contains("FAILPOINTS"),
            "a normal build reads FAILPOINTS: the fail crate is linked"
        );
    }
}
