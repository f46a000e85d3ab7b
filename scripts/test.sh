#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine of this project's kind, installing what
# the tests need first. Safe to run again: every install step checks before it acts.
#
#   scripts/test.sh            format check, lints, every test
#   scripts/test.sh -E 'test(cli)'   extra arguments go to `cargo nextest run`
#
# .ci/run calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests talk to (real peers, not mocks): Prometheus (receiver, agent
# mode and promtool), VictoriaMetrics (receiver), nginx (scrape targets, TLS server), the
# blackbox exporter (probes are compared with it), Alertmanager (amtool checks generated
# routes), the node exporter and curl (the quick-start demo, which the suite runs);
# systemd-journal-remote (writes the real journal files the journal reader is tested on;
# it brings journalctl, which cross-checks the reading), and lz4, xz-utils and zstd
# (compress journal payloads with the reference codecs, as systemd's older writers did).
# syslog-ng with its HTTP module is log-bench's first peer (its smoke test runs in the
# suite); rsyslog, the second, conflicts with it as a package, so ensure_rsyslog unpacks
# it (and installs only its libraries).
DEBIAN_PACKAGES=(prometheus victoria-metrics nginx-light prometheus-blackbox-exporter
  prometheus-alertmanager prometheus-node-exporter curl systemd-journal-remote lz4
  xz-utils zstd syslog-ng-core syslog-ng-mod-http libestr0 libfastjson4 liblognorm5
  libcurl4)

ensure_debian_packages() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$package")
  done
  if ((${#missing[@]})); then
    echo "==> installing Debian packages: ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  fi
}

# PyPI packages the tests use: rotel, a real OTLP receiver; schemathesis, which checks
# the observer's API against its OpenAPI document.
ensure_python_packages() {
  if ! python3 -c "import rotel" >/dev/null 2>&1; then
    echo "==> installing rotel (OTLP receiver) from PyPI"
    python3 -m pip install --quiet rotel
  fi
  if ! python3 -c "import opentelemetry.proto.collector.logs.v1.logs_service_pb2" >/dev/null 2>&1; then
    echo "==> installing opentelemetry-proto (independent OTLP decoder for tests) from PyPI"
    python3 -m pip install --quiet 'opentelemetry-proto==1.45.2'
  fi
  if ! python3 -c "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http.trace_exporter, opentelemetry.exporter.otlp.proto.grpc.trace_exporter" >/dev/null 2>&1; then
    echo "==> installing the OpenTelemetry Python SDK and OTLP exporters (independent span sender for tests) from PyPI"
    python3 -m pip install --quiet 'opentelemetry-sdk==1.45.2' \
      'opentelemetry-exporter-otlp-proto-http==1.45.2' 'opentelemetry-exporter-otlp-proto-grpc==1.45.2'
  fi
  if ! command -v kubernetes-validate >/dev/null 2>&1; then
    echo "==> installing kubernetes-validate (offline manifest validation) from PyPI"
    python3 -m pip install --quiet 'kubernetes-validate==1.37.0'
  fi
  if ! command -v schemathesis >/dev/null 2>&1; then
    echo "==> installing schemathesis from PyPI"
    python3 -m pip install --quiet 'schemathesis==4.32.5'
  fi
  if ! python3 -c "import opentelemetry.exporter.zipkin.json" >/dev/null 2>&1; then
    echo "==> installing the OpenTelemetry Python SDK's Zipkin exporter (independent Zipkin encoder for tests) from PyPI"
    python3 -m pip install --quiet 'opentelemetry-sdk==1.45.2' 'opentelemetry-exporter-zipkin-json==1.45.1'
  fi
}

# rsyslog and its Elasticsearch output, unpacked with `dpkg -x` where log-bench looks for
# them (bench/src/logs/peers.rs, DEFAULT_RSYSLOG_ROOT): Debian's rsyslog and syslog-ng
# packages conflict, and the benchmark runs both.
RSYSLOG_ROOT=/opt/kaas-peers/rsyslog
ensure_rsyslog() {
  if [[ ! -x "$RSYSLOG_ROOT/usr/sbin/rsyslogd" \
    || ! -f "$RSYSLOG_ROOT/usr/lib/x86_64-linux-gnu/rsyslog/omelasticsearch.so" ]]; then
    echo "==> unpacking rsyslog into $RSYSLOG_ROOT"
    local download
    download=$(mktemp -d)
    (cd "$download" && { apt-get download rsyslog rsyslog-elasticsearch \
      || { apt-get update && apt-get download rsyslog rsyslog-elasticsearch; }; })
    mkdir -p "$RSYSLOG_ROOT"
    for deb in "$download"/*.deb; do dpkg -x "$deb" "$RSYSLOG_ROOT"; done
    rm -rf "$download"
  fi
}

ensure_rust_tools() {
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "==> installing rustfmt and clippy"
    rustup component add rustfmt clippy
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "==> installing cargo-nextest"
    cargo install --locked cargo-nextest
  fi
}

if ((${#DEBIAN_PACKAGES[@]})); then
  ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
fi
ensure_rsyslog
ensure_python_packages
command -v kubectl >/dev/null 2>&1 || ensure_debian_packages kubernetes-client  # `kubectl kustomize` for deploy_manifests
ensure_rust_tools

# One full build, never rebuilt in place: incremental state would only add gigabytes of
# disk (a CI run once died of "No space left on device" writing it) and buys nothing.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> tests"
profile=default
[[ "${CI:-}" == "true" ]] && profile=ci
# The demo test runs the mock inventory example, which nextest does not build.
cargo build --locked -p kaas-observer --example mock-inventory
# nextest does not run doc tests; the project keeps its examples in tests/ instead.
cargo nextest run --workspace --locked --profile "$profile" "$@"
