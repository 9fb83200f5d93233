//! Issue 28: `scripts/serve` (which builds the server and the formatter alone) run after the
//! README's `cargo build --release --workspace` compiled rusqlite, rustls and the server again:
//! the two builds unified some dependencies' features differently. Cargo's own resolver says
//! what each build compiles, without compiling anything.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Each package a build of `packages` compiles, with its features (`cargo tree`, normal and
/// build dependencies, as `cargo build` resolves them).
fn resolved(packages: &[&str]) -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["tree", "--locked", "--offline", "-e", "normal,build"])
        .args(["--prefix", "none", "-f", "{p}|{f}"])
        .args(packages)
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // A package seen before is marked, after its features.
            let (package, features) = line.trim_end_matches(" (*)").split_once('|')?;
            Some((package.to_string(), features.to_string()))
        })
        .collect()
}

#[test]
fn serve_after_a_workspace_build_compiles_nothing_again() {
    let serve = resolved(&["-p", "server", "-p", "formatter"]);
    let workspace = resolved(&["--workspace"]);
    assert!(serve.len() > 50, "{serve:?}");
    let differ: Vec<String> = serve
        .iter()
        .filter(|(package, features)| workspace.get(*package) != Some(features))
        .map(|(package, features)| {
            format!(
                "{package}: [{features}] for scripts/serve, [{}] in the workspace",
                workspace.get(package).map_or("not built", String::as_str)
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "built twice (name the feature in server/Cargo.toml):\n{}",
        differ.join("\n")
    );
}
