#!/usr/bin/env bash
# Runs each fuzz target (`cargo fuzz`) for at most 60 seconds, starting from and adding
# to its committed corpus: fuzz/corpus/<target> for the exposition parser, the push
# decoders and the pipeline validator, journal/fuzz/corpus/parse_file for the journal
# reader (target `journal`). A crash stops the script with the input under
# <fuzz dir>/artifacts/<target>/: fix the code, copy the input into the corpus (the
# replay tests in exposition/, series/, pipeline/ and journal/ then keep checking it on
# stable Rust) and run again.
#
#   scripts/fuzz.sh                    every target, 60 s each
#   scripts/fuzz.sh otlp 30            one target, 30 s
#
# Uses a nightly toolchain when one is installed, else the stable one with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly-only sanitizer flags). Installs
# cargo-fuzz when it is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

targets=(exposition remote_write otlp pipeline journal)
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
  # The journal reader's target lives beside its crate; the others share fuzz/.
  case "$target" in
    journal) dir="$root/journal/fuzz" binary=parse_file ;;
    *) dir="$root/fuzz" binary="$target" ;;
  esac
  echo "==> fuzzing $target for ${seconds}s"
  mkdir -p "$dir/corpus/$binary"
  (cd "$dir" && cargo "${toolchain[@]}" fuzz run "$binary" "corpus/$binary" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10)
done
