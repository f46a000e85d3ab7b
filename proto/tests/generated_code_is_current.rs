//! Regenerates the Rust code from the `.proto` file with `protox` and compares it with
//! the committed copy in `src/gen/`, so the two can never silently drift apart.
//! Set `KAAS_UPDATE_GENERATED=1` to write the fresh code instead of comparing.

use std::fs;
use std::path::Path;

#[test]
fn committed_code_matches_the_proto_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(
        [root.join(kaas_proto::PROTO_FILE)],
        [root.join(kaas_proto::PROTO_INCLUDE_DIR)],
    )
    .expect("control.proto compiles");

    let out = tempfile::tempdir().unwrap();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("code generation succeeds");

    let name = "kaas.control.v1.rs";
    let fresh = fs::read_to_string(out.path().join(name)).unwrap();
    let committed_path = root.join("src/gen").join(name);
    if std::env::var_os("KAAS_UPDATE_GENERATED").is_some() {
        fs::create_dir_all(committed_path.parent().unwrap()).unwrap();
        fs::write(&committed_path, &fresh).unwrap();
        return;
    }
    let committed = fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == fresh,
        "src/gen/{name} is out of date with {}; run \
         KAAS_UPDATE_GENERATED=1 cargo test -p kaas-proto --test generated_code_is_current",
        kaas_proto::PROTO_FILE
    );
}
