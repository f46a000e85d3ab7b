//! Replays the committed fuzz corpus (`fuzz/corpus/parse_file`: the seeds, the corrupt
//! fixtures and what the fuzzer found worth keeping) through the fuzz target's body on
//! stable Rust, so every input the fuzzer once needed keeps passing.

#[path = "../fuzz/harness.rs"]
mod harness;

#[test]
fn committed_fuzz_corpus_replays_without_panics_or_loops() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse_file");
    let mut inputs = 0;
    for dirent in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = dirent.expect("entry").path();
        harness::exercise(&std::fs::read(&path).expect("read input"));
        inputs += 1;
    }
    assert!(inputs >= 10, "the corpus is there: {inputs} inputs");
}
