//! Table test over `testdata/formats/`: each `<name>.log` is read as a container log and
//! must give the records in `<name>.expected`, one per line as
//! `<stream>\t<truncated 0|1>\t<body, newlines as \n>`, compared per stream in order.
//! Header lines `# max_record_bytes=N` and `# multiline=<first-line regex>` set options.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::Node;
use kaas_logfiles::MultilineConfig;

type PerStream = BTreeMap<String, Vec<(bool, String)>>;

fn expected(text: &str) -> (PerStream, Option<usize>, Option<String>) {
    let (mut records, mut cap, mut multiline) = (PerStream::new(), None, None);
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("# max_record_bytes=") {
            cap = Some(value.parse().expect("test setup"));
        } else if let Some(value) = line.strip_prefix("# multiline=") {
            multiline = Some(value.to_owned());
        } else {
            let mut fields = line.splitn(3, '\t');
            let (stream, truncated, body) = (
                fields.next().expect("test setup"),
                fields.next().expect("test setup"),
                fields.next().expect("test setup"),
            );
            records
                .entry(stream.to_owned())
                .or_default()
                .push((truncated == "1", body.replace("\\n", "\n")));
        }
    }
    (records, cap, multiline)
}

fn check_fixture(log: &Path) {
    let expected_path = log.with_extension("expected");
    let text = std::fs::read_to_string(&expected_path)
        .unwrap_or_else(|_| panic!("{} has no .expected", log.display()));
    let (want, cap, multiline) = expected(&text);
    let node = Node::new();
    let dir = node.container_dir("fixtures", "pod", "c");
    std::fs::copy(log, dir.join("0.log")).expect("test setup");
    let mut config = node.config();
    if let Some(cap) = cap {
        config.limits.max_record_bytes = cap;
    }
    config.multiline = multiline.map(|first_line| MultilineConfig {
        first_line,
        flush_after: Duration::from_millis(100),
        max_lines: 100,
    });
    let (_, ledger) = node.read_all(&config);
    let mut got = PerStream::new();
    for record in &ledger.records {
        got.entry(record.stream.name().to_owned())
            .or_default()
            .push((record.truncated, record.body.clone()));
        assert_eq!(record.file.path, dir.join("0.log"));
    }
    assert_eq!(got, want, "{}", log.display());
}

#[test]
fn every_fixture_gives_its_expected_records() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/formats");
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .expect("test setup")
        .map(|entry| entry.expect("test setup").path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    assert!(logs.len() >= 8, "fixtures missing: {logs:?}");
    for log in logs {
        check_fixture(&log);
    }
}

#[test]
fn container_records_carry_their_time_and_pod() {
    let node = Node::new();
    let dir = node.container_dir("shop", "cart-7d9f", "server");
    std::fs::write(dir.join("2.log"), "2024-05-06T07:08:09.5Z stderr F x\n").expect("test setup");
    let (_, ledger) = node.read_all(&node.config());
    let record = &ledger.records[0];
    assert_eq!(record.time_unix_nano, Some(1_714_979_289_500_000_000));
    let kaas_logfiles::Source::Pod(pod) = &record.file.source else {
        panic!("a container log")
    };
    assert_eq!(
        (
            pod.namespace.as_str(),
            pod.pod.as_str(),
            pod.uid.as_str(),
            pod.container.as_str(),
            pod.restart_count
        ),
        ("shop", "cart-7d9f", "uid-cart-7d9f", "server", 2)
    );
}
