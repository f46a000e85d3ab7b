#!/usr/bin/env bash
# Runs kaas-observer's main job locally and shows the result.
#
# Today that is the offline half: build the observer and the agent, then check the
# example pipelines and agent configuration exactly as the observer's API and the agent
# will check them, and show how a broken pipeline is refused. When the observer and the
# agent's data path land, this script grows into the full local demo (observer on
# SQLite, an agent, a real remote-write receiver, and the delivered series).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building observer and cluster-agent"
cargo build --locked --quiet --bin observer --bin cluster-agent
observer=target/debug/observer
agent=target/debug/cluster-agent

echo
echo "==> observer pipeline validate: the examples"
"$observer" pipeline validate $(printf -- '-f %s ' examples/pipelines/*.yaml)

echo
echo "==> cluster-agent check-config: a standalone agent configuration"
"$agent" check-config --config examples/agent/standalone.yaml

echo
echo "==> observer pipeline validate: a broken pipeline is refused with every error"
set +e
"$observer" pipeline validate -f pipeline/testdata/bad/many-errors-at-once.yaml
status=$?
set -e
if [[ $status -ne 1 ]]; then
  echo "expected exit status 1 for the broken pipeline, got $status" >&2
  exit 1
fi
echo
echo "demo finished: examples valid, broken pipeline refused (exit status $status)"
