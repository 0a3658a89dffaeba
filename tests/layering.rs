//! The layering of `src/` (issue #11): the shared core imports no backend,
//! and no backend imports another. Read from the sources, so a new import
//! that breaks a rule fails `cargo test` with the file and line.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Which paths a file (relative to `src/`) must not name, and why.
fn forbidden(file: &str) -> Vec<(&'static str, &'static str)> {
    const EMBEDDED: [&str; 3] = ["crate::runtime", "store::embedded", "log::embedded"];
    const CLUSTER: [&str; 4] = [
        "crate::cluster",
        "store::mongo",
        "log::kafka",
        "store::pushdown",
    ];
    let mut out = Vec::new();
    let core = [
        "event.rs",
        "model.rs",
        "fold.rs",
        "engine/",
        "codec.rs",
        "ids.rs",
        "names.rs",
        "failpoint.rs",
        "error.rs",
        "observability.rs",
        "deployment.rs",
        "hooks/",
        "log/mod.rs",
        "log/memory.rs",
        "store/mod.rs",
    ];
    if core.iter().any(|c| file.starts_with(c)) {
        out.extend(EMBEDDED.map(|p| (p, "the shared core imports no backend")));
        out.extend(CLUSTER.map(|p| (p, "the shared core imports no backend")));
    }
    if file.starts_with("runtime/") || file == "store/embedded.rs" || file == "log/embedded.rs" {
        out.extend(CLUSTER.map(|p| (p, "the embedded backend imports nothing of the cluster's")));
    }
    if file.starts_with("cluster/")
        || file.starts_with("store/mongo/")
        || file == "store/pushdown.rs"
        || file == "log/kafka.rs"
    {
        out.extend(EMBEDDED.map(|p| {
            (
                p,
                "the cluster backend imports nothing of the embedded one's",
            )
        }));
    }
    out
}

#[test]
fn no_backend_imports_another_and_the_core_imports_none() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut broken = Vec::new();
    let mut checked = 0;
    for path in &files {
        let file = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let rules = forbidden(&file);
        if rules.is_empty() {
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            // Doc and comment lines may name anything (links, explanations).
            if code.starts_with("//") {
                continue;
            }
            for (path_part, why) in &rules {
                if code.contains(path_part) {
                    broken.push(format!("src/{file}:{}: `{}` ({why})", n + 1, code.trim()));
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} files fall under a rule");
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}
