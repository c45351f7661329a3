//! Every input of the committed fuzz corpora (`fuzz/corpus/<target>/`) and every crash ever
//! found (`fuzz/regressions/<target>/`) replays through the fuzz targets' properties, so CI
//! keeps them without a sanitizer build or a nightly toolchain.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// Replays every corpus and regression input of every target.
#[test]
fn corpora_and_regressions_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (target, check) in bcproxy::fuzzing::TARGETS {
        let corpus = inputs(&root.join("corpus").join(target));
        assert!(!corpus.is_empty(), "no corpus committed for {target}");
        let regressions = inputs(&root.join("regressions").join(target));
        for file in corpus.iter().chain(&regressions) {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails its property",
                file.display()
            );
            replayed += 1;
        }
    }
    assert!(replayed > 100, "only {replayed} inputs replayed");
}
