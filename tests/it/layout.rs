//! House rules a reviewer would otherwise check by hand.

fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    crate::support::walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect()
}

#[test]
fn every_module_file_says_what_lives_there() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = rust_files(&root.join("src"));
    assert!(files.len() > 20);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("//! "),
            "{} lacks a leading //! line",
            file.display()
        );
    }
}

#[test]
fn architecture_map_names_every_top_level_module() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    for entry in std::fs::read_dir(root.join("src")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lib.rs" || name == "main.rs" {
            continue;
        }
        let module = name.trim_end_matches(".rs");
        assert!(
            map.contains(&format!("`src/{module}")),
            "ARCHITECTURE.md does not describe src/{module}"
        );
    }
}
