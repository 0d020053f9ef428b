//! The crate layering of STYLE.md, checked from `cargo metadata`: core knows
//! nothing of kv, Redis or HTTP; kv depends on core only; only the server parses
//! config and serves. Dev-dependencies are free: tests may reach across layers.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// Crates that serve or parse config; none of them may sit below the server.
const SERVING_CRATES: &[&str] = &[
    "axum",
    "hyper",
    "redis",
    "clap",
    "toml",
    "metrics-exporter-prometheus",
];

/// The crates that may depend on colony-kv outside dev-dependencies.
const KV_DEPENDENTS: &[&str] = &["colony-server", "colony-testkit"];

/// A crate's non-dev dependencies (normal and build), by package name.
fn layered_deps(package: &Value) -> Vec<&str> {
    package["dependencies"]
        .as_array()
        .map(|deps| {
            deps.iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .filter_map(|d| d["name"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// Every broken rule, as "crate -> dependency: rule".
fn violations(metadata: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    for package in &packages {
        let name = package["name"].as_str().unwrap_or("<unnamed>");
        for dep in layered_deps(package) {
            let mut broken = |rule: &str| out.push(format!("{name} -> {dep}: {rule}"));
            let colony_dep = dep.starts_with("colony-");
            match name {
                "colony-core" if colony_dep => broken("colony-core depends on no colony crate"),
                "colony-kv" if colony_dep && dep != "colony-core" => {
                    broken("colony-kv depends on colony-core only among colony crates")
                }
                "colony-bench" if colony_dep => {
                    broken("colony-bench depends on no colony crate (it speaks RESP only)")
                }
                _ => {}
            }
            if dep == "colony-kv" && !KV_DEPENDENTS.contains(&name) {
                broken("only colony-server and colony-testkit may depend on colony-kv");
            }
            if matches!(name, "colony-core" | "colony-kv") && SERVING_CRATES.contains(&dep) {
                broken("no HTTP, Redis or config parsing below colony-server");
            }
        }
    }
    out
}

fn workspace_metadata() -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo metadata failed in {}:\n{}",
        root.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn workspace_crates_follow_the_dependency_rules() {
    let metadata = workspace_metadata();
    let names: Vec<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    // A renamed crate would make the rules below vacuous: insist on seeing them.
    for expected in ["colony-core", "colony-kv", "colony-server", "colony-bench"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from cargo metadata; update the layering rules (found {names:?})"
        );
    }
    let broken = violations(&metadata);
    assert!(
        broken.is_empty(),
        "crate layering broken (see STYLE.md):\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_checker_names_the_offending_crate_and_dependency() {
    let dep = |name: &str, kind: Option<&str>| serde_json::json!({ "name": name, "kind": kind });
    let metadata = serde_json::json!({ "packages": [
        { "name": "colony-core", "dependencies": [
            dep("colony-kv", None), dep("axum", None), dep("colony-testkit", Some("dev")),
        ] },
        { "name": "colony-kv", "dependencies": [
            dep("colony-core", None), dep("colony-server", None), dep("toml", Some("build")),
            dep("redis", Some("dev")),
        ] },
        { "name": "colony-bench", "dependencies": [dep("colony-kv", None)] },
        { "name": "colony-server", "dependencies": [dep("colony-kv", None), dep("axum", None)] },
    ] });
    let mut broken = violations(&metadata);
    broken.sort();
    let pairs: Vec<&str> = broken
        .iter()
        .map(|v| v.split(':').next().unwrap())
        .collect();
    assert_eq!(
        pairs,
        [
            "colony-bench -> colony-kv",
            "colony-bench -> colony-kv",
            "colony-core -> axum",
            "colony-core -> colony-kv",
            "colony-core -> colony-kv",
            "colony-kv -> colony-server",
            "colony-kv -> toml",
        ],
        "{broken:#?}"
    );
}
