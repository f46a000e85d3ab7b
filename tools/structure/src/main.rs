//! `kaas-structure`: prints the structure check's report for the workspace,
//! compares it with the baseline, then checks the docs' flow sections.
//!
//! ```text
//! cargo run -p kaas-structure                      # report; exit 1 unless it matches the baseline
//! cargo run -p kaas-structure -- --write-baseline  # rewrite the baseline from the tree
//! cargo run -p kaas-structure -- --nested          # also cycles among submodules (not gated)
//! cargo run -p kaas-structure -- --include-tests   # count references from test code too
//! cargo run -p kaas-structure -- --edges           # also list every edge between modules
//! cargo run -p kaas-structure -- --strict          # exit 1 on any violation, listed or not
//! cargo run -p kaas-structure -- --crate DIR       # check one crate folder, no baseline
//! ```
//!
//! Exit codes: 0 passed, 1 violations, 2 the check could not run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kaas_structure::baseline::{self, BASELINE_PATH};
use kaas_structure::{EdgeOptions, Report, check_crate, check_flow, check_workspace};

const USAGE: &str = "usage: kaas-structure [--root DIR | --crate DIR] [--write-baseline] [--nested] [--include-tests] [--edges] [--strict]";

#[derive(Default)]
struct Args {
    root: Option<PathBuf>,
    krate: Option<PathBuf>,
    write_baseline: bool,
    strict: bool,
    edges: bool,
    options: EdgeOptions,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--root" => args.root = Some(words.next().ok_or("--root needs a folder")?.into()),
            "--crate" => args.krate = Some(words.next().ok_or("--crate needs a folder")?.into()),
            "--write-baseline" => args.write_baseline = true,
            "--strict" => args.strict = true,
            "--edges" => args.edges = true,
            "--nested" => args.options.nested = true,
            "--include-tests" => args.options.include_tests = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.krate.is_some() && (args.root.is_some() || args.write_baseline) {
        return Err("--crate checks one crate without a baseline; it does not go with --root or --write-baseline".into());
    }
    Ok(args)
}

/// The nearest folder at or above the current one whose `Cargo.toml` has `[workspace]`.
fn find_workspace_root() -> Option<PathBuf> {
    let start = std::env::current_dir().ok()?;
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.contains("[workspace]"))
        })
        .map(Path::to_owned)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("kaas-structure: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(passed) => ExitCode::from(if passed { 0 } else { 1 }),
        Err(message) => {
            eprintln!("kaas-structure: {message}");
            ExitCode::from(2)
        }
    }
}

fn print_report(report: &Report, edges: bool) {
    print!("{report}");
    if edges {
        println!("\nEdges between modules: {}", report.edges.len());
        for (krate, parent, edge) in &report.edges {
            let scope = if parent.is_empty() {
                String::new()
            } else {
                format!(" in {parent}")
            };
            println!("  {krate}{scope}: {edge}");
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    if let Some(dir) = &args.krate {
        let report = check_crate(dir, args.options).map_err(|e| e.to_string())?;
        print_report(&report, args.edges);
        return Ok(report.violations().is_empty());
    }
    let root = args
        .root
        .clone()
        .or_else(find_workspace_root)
        .ok_or("no Cargo.toml with [workspace] here or above; pass --root")?;
    let report: Report = check_workspace(&root, args.options).map_err(|e| e.to_string())?;
    print_report(&report, args.edges);
    let baseline_path = root.join(BASELINE_PATH);
    if args.write_baseline {
        std::fs::write(&baseline_path, baseline::render(&report))
            .map_err(|e| format!("cannot write {}: {e}", baseline_path.display()))?;
        println!(
            "\nWrote {} entries to {BASELINE_PATH}.",
            report.violations().len()
        );
        return Ok(true);
    }
    let text = match std::fs::read_to_string(&baseline_path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(format!("cannot read {}: {error}", baseline_path.display())),
    };
    let baseline = baseline::parse(&text).map_err(|e| e.to_string())?;
    let comparison = baseline::compare(&report, &baseline);
    println!("\n{comparison}");
    let flow = check_flow(&root).map_err(|e| e.to_string())?;
    println!("\n{flow}");
    let clean = report.violations().is_empty();
    Ok(comparison.passed() && flow.problems.is_empty() && (clean || !args.strict))
}
