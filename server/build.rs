//! Embeds every `migrations/NNNN_*.sql` file (SQLite) and `migrations/postgres/NNNN_*.sql`
//! (PostgreSQL's dialect of the same steps), in name order, so that adding a file is all it
//! takes to upgrade old databases in place at the next start-up. The two lists must name the
//! same steps: a build with a step in one dialect only fails here.

use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let sqlite = migrations(&dir);
    let postgres = migrations(&dir.join("postgres"));
    let names = |list: &[(String, String)]| list.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&sqlite),
        names(&postgres),
        "migrations/ and migrations/postgres/ must hold the same numbered steps"
    );
    let mut code = String::new();
    for (constant, list) in [("SQLITE", &sqlite), ("POSTGRES", &postgres)] {
        code += &format!(
            "/// `(file name, SQL)` of every migration, in order.\npub const {constant}: &[(&str, &str)] = &[\n"
        );
        for (name, path) in list {
            code += &format!("    ({name:?}, include_str!({path:?})),\n");
        }
        code += "];\n";
    }
    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("migrations.rs");
    fs::write(out, code).expect("writing migrations.rs");
}

/// `(file name, absolute path)` of the `.sql` files in `dir`, sorted by name.
fn migrations(dir: &Path) -> Vec<(String, String)> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("migrations entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            println!("cargo:rerun-if-changed={}", path.display());
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let abs = fs::canonicalize(path).expect("canonical migration path");
            (name, abs.display().to_string())
        })
        .collect()
}
