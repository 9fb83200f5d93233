//! Embeds every `migrations/NNNN_*.sql` file, in name order, so that adding a file is all it
//! takes to upgrade old databases in place at the next start-up.

use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("migrations entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    let mut code = String::from("/// `(file name, SQL)` of every migration, in order.\npub const MIGRATIONS: &[(&str, &str)] = &[\n");
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap().to_string_lossy();
        let abs = fs::canonicalize(path).expect("canonical migration path");
        code += &format!(
            "    ({name:?}, include_str!({:?})),\n",
            abs.display().to_string()
        );
    }
    code += "];\n";
    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("migrations.rs");
    fs::write(out, code).expect("writing migrations.rs");
}
