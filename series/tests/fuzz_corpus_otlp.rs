//! Replays the committed fuzz corpus (`fuzz/corpus/otlp`, every crash input found
//! included) through the fuzz target's own checks, so the suite keeps checking them on
//! stable Rust (`scripts/fuzz.sh` runs the target itself).

#[path = "../../fuzz/targets/otlp.rs"]
mod target;

#[test]
fn the_committed_otlp_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/otlp");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus directory") {
        let path = entry.expect("a corpus entry").path();
        target::run(&std::fs::read(&path).expect("a corpus file"));
        inputs += 1;
    }
    assert!(inputs >= 5, "only {inputs} inputs in {}", dir.display());
}
