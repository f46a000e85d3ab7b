#!/usr/bin/env bash
# Runs each fuzz target (fuzz/, `cargo fuzz`) for at most 60 seconds, starting from
# and adding to its committed corpus (fuzz/corpus/<target>). A crash stops the script
# with the input under fuzz/artifacts/<target>/: fix the code, copy the input into the
# corpus (the replay tests in exposition/, series/ and pipeline/ then keep checking it
# on stable Rust) and run again.
#
#   scripts/fuzz.sh                    every target, 60 s each
#   scripts/fuzz.sh otlp 30            one target, 30 s
#
# Uses a nightly toolchain when one is installed, else the stable one with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly-only sanitizer flags). Installs
# cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

targets=(exposition remote_write otlp pipeline)
if (($# >= 1)); then
  targets=("$1")
fi
seconds="${2:-60}"
if ((seconds > 60)); then
  echo "at most 60 seconds per target" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

for target in "${targets[@]}"; do
  echo "==> fuzzing $target for ${seconds}s"
  mkdir -p "corpus/$target"
  cargo "${toolchain[@]}" fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10
done
