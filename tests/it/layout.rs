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

/// The top-level module (`src/NAME.rs` or `src/NAME/…`) each source file belongs to, with the
/// top-level modules its code (not its comments) names as `crate::NAME`.
fn imports_by_module() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for file in rust_files(&root) {
        let relative = file.strip_prefix(&root).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let entry = graph.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            // `crate::name` and `use crate::{a, b::c}` both name their first segment.
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                    group
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|part| part.trim().split("::").next().unwrap_or("").trim())
                        .collect()
                } else {
                    vec![
                        rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or(""),
                    ]
                };
                for name in names {
                    if !name.is_empty() && name != module {
                        entry.insert(name.to_owned());
                    }
                }
            }
        }
    }
    graph
}

/// Layers: no circle of imports between http, app, ops, store and jobs, and nothing below
/// `http/` imports it (only the composition root `daemon` and the CLI do).
#[test]
fn the_layers_have_no_import_circle_and_nothing_below_http_imports_it() {
    let graph = imports_by_module();
    let layered = ["http", "app", "ops", "store", "jobs", "services"];
    // Depth-first search for a cycle inside the layered set.
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        layered: &[&str],
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if layered.contains(&next.as_str())
                && let Some(cycle) = visit(next, graph, layered, path, done)
            {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = Default::default();
    for start in layered {
        if let Some(cycle) = visit(start, &graph, &layered, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", cycle.join(" -> "));
        }
    }
    let allowed = ["http", "daemon", "cli"];
    let importers: Vec<&String> = graph
        .iter()
        .filter(|(module, imports)| !allowed.contains(&module.as_str()) && imports.contains("http"))
        .map(|(module, _)| module)
        .collect();
    assert!(
        importers.is_empty(),
        "modules below http import it: {importers:?}"
    );
    // The store is the bottom of the stateful layers: it imports none of them.
    let store = &graph["store"];
    for upper in ["app", "http", "ops", "jobs", "services", "daemon"] {
        assert!(!store.contains(upper), "store imports {upper}");
    }
    // The store speaks `StoreError`; API codes and HTTP statuses are given in src/error.rs only.
    assert!(
        !store.contains("error"),
        "store imports crate::error (API codes); return a StoreError instead"
    );
}

/// No source file over 900 lines, tests aside (`tests.rs` files and `tests/` directories).
#[test]
fn no_source_file_is_over_900_lines() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut long = Vec::new();
    for file in rust_files(&root) {
        let is_test = file.file_name().is_some_and(|n| n == "tests.rs")
            || file.components().any(|c| c.as_os_str() == "tests");
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        if !is_test && lines > 900 {
            long.push(format!(
                "{} ({lines})",
                file.strip_prefix(&root).unwrap().display()
            ));
        }
    }
    assert!(long.is_empty(), "files over 900 lines: {long:?}");
}
