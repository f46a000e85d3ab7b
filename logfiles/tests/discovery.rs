//! Discovery on a hostile tree: the service-account token, the identity key (by symlink
//! and by hard link), a symlink escaping the root, a symlinked directory and the agent's
//! data directory below an allowed root are all refused, and nothing of them is read.

mod common;

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use common::Node;
use kaas_logfiles::{Discovery, RefusalReason, Source, TailConfig};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.secret-token";
const KEY: &str = "-----BEGIN PRIVATE KEY----- identity";

struct Hostile {
    node: Node,
    config: TailConfig,
    logs: PathBuf,
}

/// `var/log` is the allowed root with `app/*.log` and `**/*.log` globs; the token lives
/// outside it, the agent's data directory (with the identity key) inside it.
fn hostile_tree() -> Hostile {
    let node = Node::new();
    let base = node.base();
    let logs = base.join("var/log");
    let token_dir = base.join("var/run/secrets/kubernetes.io/serviceaccount");
    let data = logs.join("kaas-agent");
    for dir in [&token_dir, &data, &logs.join("app"), &base.join("outside")] {
        std::fs::create_dir_all(dir).expect("test setup");
    }
    std::fs::write(token_dir.join("token"), TOKEN).expect("test setup");
    std::fs::write(data.join("identity.key"), KEY).expect("test setup");
    std::fs::write(data.join("buffer.log"), "agent's own data\n").expect("test setup");
    std::fs::write(base.join("outside/other.log"), "outside the root\n").expect("test setup");
    std::fs::write(logs.join("app/good.log"), "seq=1\n").expect("test setup");
    symlink(token_dir.join("token"), logs.join("app/token.log")).expect("test setup");
    symlink(data.join("identity.key"), logs.join("app/key.log")).expect("test setup");
    std::fs::hard_link(data.join("identity.key"), logs.join("app/hard.log")).expect("test setup");
    // A file of the denied data directory that is not itself listed (a buffer segment).
    std::fs::hard_link(data.join("buffer.log"), logs.join("app/hard-buffer.log"))
        .expect("test setup");
    symlink(base.join("outside"), logs.join("app/escape")).expect("test setup");
    std::fs::create_dir_all(logs.join("other")).expect("test setup");
    std::fs::write(logs.join("other/real.txt"), "seq=2\n").expect("test setup");
    symlink(logs.join("other/real.txt"), logs.join("app/inside.log")).expect("test setup");
    symlink(logs.join("app/good.log"), logs.join("app/alias.log")).expect("test setup");
    symlink(logs.join("app/missing"), logs.join("app/dangling.log")).expect("test setup");
    // A container log symlinked to the token, below the pod root.
    let container = node.container_dir("default", "evil", "c");
    symlink(token_dir.join("token"), container.join("0.log")).expect("test setup");
    let mut config = node.config();
    config.allowed_roots = vec![logs.clone()];
    config.globs = vec![logs.join("app/*.log"), logs.join("**/*.log")];
    config.denied = vec![data.clone(), token_dir, data.join("identity.key")];
    Hostile { node, config, logs }
}

#[test]
fn denied_paths_and_escaping_symlinks_are_refused() {
    let hostile = hostile_tree();
    let scan = Discovery::new(&hostile.config.validate().expect("test setup")).scan();
    let admitted: Vec<_> = scan
        .files
        .iter()
        .map(|f| {
            f.path
                .strip_prefix(&hostile.logs)
                .expect("test setup")
                .to_path_buf()
        })
        .collect();
    assert_eq!(
        admitted,
        vec![
            PathBuf::from("app/good.log"),
            PathBuf::from("app/inside.log")
        ]
    );
    assert!(scan.files.iter().all(|f| f.source == Source::Plain));
    assert_eq!(
        scan.files[1].open_path,
        hostile.logs.join("other/real.txt"),
        "an inside symlink opens its target"
    );
    let reason = |name: &str| {
        scan.refused
            .iter()
            .find(|r| r.path.ends_with(name))
            .map(|r| r.reason)
            .unwrap_or_else(|| panic!("{name} not refused: {:?}", scan.refused))
    };
    assert_eq!(reason("app/token.log"), RefusalReason::SymlinkOutsideRoot);
    assert_eq!(reason("app/key.log"), RefusalReason::Denied);
    assert_eq!(
        reason("app/hard.log"),
        RefusalReason::Denied,
        "a hard link to the key is the key"
    );
    assert_eq!(
        reason("app/hard-buffer.log"),
        RefusalReason::HardLinked,
        "a hard link into a denied directory cannot be told from its inode"
    );
    assert_eq!(
        reason("kaas-agent"),
        RefusalReason::Denied,
        "the data directory is not entered"
    );
    assert_eq!(reason("app/dangling.log"), RefusalReason::Unresolvable);
    assert_eq!(
        reason("default_evil_uid-evil/c/0.log"),
        RefusalReason::SymlinkOutsideRoot
    );
    assert!(
        !scan
            .refused
            .iter()
            .any(|r| r.path.ends_with("escape/other.log")),
        "a symlinked directory is not entered"
    );
    assert!(
        !scan.refused.iter().any(|r| r.path.ends_with("alias.log")),
        "a second path to an admitted file is merged"
    );
}

#[test]
fn nothing_of_a_refused_file_is_ever_read() {
    let hostile = hostile_tree();
    let (tailer, ledger) = hostile.node.read_all(&hostile.config);
    let bodies: Vec<&str> = ledger.records.iter().map(|r| r.body.as_str()).collect();
    // good.log once (alias.log is the same inode), and inside.log's target.
    let mut bodies = bodies;
    bodies.sort_unstable();
    assert_eq!(bodies, vec!["seq=1", "seq=2"]);
    assert!(tailer.discovery_status().refused_total >= 6);
}

#[test]
fn the_watched_file_bound_keeps_the_files_already_followed() {
    let node = Node::new();
    let write = |pod: &str, seq: u64| {
        let dir = node.container_dir("default", pod, "c");
        std::fs::write(dir.join("0.log"), common::cri_line(seq, "stdout")).expect("test setup");
        dir.join("0.log")
    };
    let first = write("p0", 0);
    for pod in 1..10 {
        write(&format!("p{pod}"), pod);
    }
    let mut config = node.config();
    config.limits.max_files = 4;
    let (mut tailer, mut ledger) = node.read_all(&config);
    assert_eq!(tailer.tracked_files(), 4);
    assert_eq!(tailer.discovery_status().over_file_limit, 6);
    // A newcomer that sorts first does not push out a followed file...
    write("a-new", 100);
    let mut clock = std::time::Instant::now();
    common::drain(
        &mut tailer,
        &mut ledger,
        &mut clock,
        std::time::Duration::from_millis(50),
    );
    assert_eq!(tailer.discovery_status().over_file_limit, 7);
    ledger.assert_complete(0..4, 0);
    // ...but takes the place of one that is gone.
    std::fs::remove_file(first).expect("test setup");
    common::drain(
        &mut tailer,
        &mut ledger,
        &mut clock,
        std::time::Duration::from_millis(50),
    );
    assert_eq!(tailer.tracked_files(), 4);
    assert!(ledger.delivered().contains(&100));
}
