//! The structure gate the suite runs: the workspace's cycles between top-level
//! modules, long files and long functions are exactly those the baseline lists.

use std::path::Path;

use kaas_structure::baseline::{self, BASELINE_PATH};
use kaas_structure::{EdgeOptions, check_workspace};

#[test]
fn the_workspace_structure_matches_the_baseline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let report = check_workspace(&root, EdgeOptions::default())
        .unwrap_or_else(|e| panic!("structure check: {e}"));
    assert!(
        report.files > 100,
        "the check read only {} files; is the workspace found?",
        report.files
    );
    let text = std::fs::read_to_string(root.join(BASELINE_PATH))
        .unwrap_or_else(|e| panic!("{BASELINE_PATH}: {e}"));
    let baseline = baseline::parse(&text).unwrap_or_else(|e| panic!("{BASELINE_PATH}: {e}"));
    let comparison = baseline::compare(&report, &baseline);
    assert!(comparison.passed(), "\n{comparison}");
}

/// The module paths named in the flow sections of `docs/architecture.md` and of each
/// crate root's map exist and come in flow order (`kaas_structure::check_flow`). Until
/// those sections are marked there is nothing to check, and this passes.
#[test]
fn the_docs_name_existing_modules_in_flow_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let report = kaas_structure::check_flow(&root).unwrap_or_else(|e| panic!("flow check: {e}"));
    println!("{report}");
    assert!(report.problems.is_empty(), "\n{report}");
}
