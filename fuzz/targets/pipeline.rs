//! The pipeline parser and validator on arbitrary text: it never panics, every refusal
//! carries at least one message, and a pipeline it accepts (in either origin) is accepted again after a
//! round trip through JSON (what the observer stores and the agent receives). Shared by
//! the fuzz target and the corpus replay test (`pipeline/tests/fuzz_corpus.rs`).

use kaas_pipeline::ValidationContext;
use kaas_pipeline::document::parse_pipelines;

/// One input, validated as a standalone file and as the observer distributes it.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for context in [
        ValidationContext::standalone(),
        ValidationContext::tenant_default(),
    ] {
        run_in(text, &context);
    }
}

fn run_in(text: &str, context: &ValidationContext) {
    for document in parse_pipelines(text, context) {
        match document.outcome {
            Ok(pipeline) => {
                let json = serde_json::to_string(pipeline.resource()).expect("serializable");
                let again = parse_pipelines(&json, context);
                assert_eq!(again.len(), 1);
                if let Err(errors) = &again[0].outcome {
                    panic!("accepted, then refused after a JSON round trip: {errors}");
                }
            }
            Err(errors) => assert!(!errors.to_string().is_empty()),
        }
    }
}
