//! Replays the fuzz corpora on stable: every file of `fuzz/corpus/<target>/`
//! and `fuzz/regressions/<target>/` goes through the same entry point
//! (`accrete::fuzzing`) as the cargo-fuzz target, and must neither panic
//! nor break an invariant. This is what CI runs of the fuzzing (see the
//! "Fuzzing" section of DESIGN.md).
//!
//! `ACCRETE_BLESS=1 cargo test --features fuzzing --test fuzz_corpus`
//! rewrites the seed corpora from the real encoders
//! ([`accrete::fuzzing::seeds`]).

use std::path::{Path, PathBuf};

use accrete::fuzzing::{self, Failure, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("list a corpus").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    out.sort();
    out
}

fn replay(target: &str, path: &Path) -> Result<(), Failure> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        // A fuzzer running on the corpus meanwhile replaced it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => panic!("reading {}: {e}", path.display()),
    };
    fuzzing::run(target, &bytes)
}

#[test]
fn seeds_decode_and_round_trip() {
    let seeds = fuzzing::seeds();
    for target in TARGETS {
        assert!(
            seeds.iter().any(|(t, _, _)| *t == target),
            "no seeds for {target}"
        );
    }
    for (target, name, bytes) in &seeds {
        assert_eq!(
            fuzzing::run(target, bytes),
            Ok(()),
            "the seed {target}/{name} does not go through"
        );
    }
}

/// With `ACCRETE_BLESS=1`, writes the seeds (before the replay reads them).
fn bless_seed_corpora(fuzz: &Path) {
    if std::env::var_os("ACCRETE_BLESS").is_none_or(|v| v != "1") {
        return;
    }
    for (target, name, bytes) in fuzzing::seeds() {
        let dir = fuzzing::corpus_dir(fuzz, target);
        std::fs::create_dir_all(&dir).expect("create a corpus directory");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
    }
}

#[test]
fn every_corpus_and_regression_file_replays_cleanly() {
    let fuzz = fuzz_dir();
    bless_seed_corpora(&fuzz);
    let mut replayed = 0;
    let mut broken = Vec::new();
    for target in TARGETS {
        let corpus = files(&fuzzing::corpus_dir(&fuzz, target));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{target} is empty (ACCRETE_BLESS=1 writes the seeds)"
        );
        let regressions = files(&fuzzing::regressions_dir(&fuzz, target));
        for path in corpus.iter().chain(&regressions) {
            // A panic fails the test with the panic's message; name the file.
            let result = std::panic::catch_unwind(|| replay(target, path));
            match result {
                Ok(Ok(()) | Err(Failure::Rejected(_))) => {}
                Ok(Err(Failure::Broken(why))) => broken.push(format!("{}: {why}", path.display())),
                Err(_) => broken.push(format!("{}: panicked (see above)", path.display())),
            }
            replayed += 1;
        }
    }
    assert!(
        broken.is_empty(),
        "{} of {replayed} inputs failed:\n{}",
        broken.len(),
        broken.join("\n")
    );
}
