#!/usr/bin/env bash
# Creates (or updates) the ConfigMap kaas-observer-rules from the repository's
# alerts/*.rules.yaml, for the Thanos ruler. The rules live outside deploy/ so one copy
# serves promtool's tests, the docs and the cluster. Run it again after upgrading; the
# ruler's pods pick the change up when the kubelet refreshes the volume (about a
# minute) and the ruler reloads (`kubectl rollout restart statefulset/thanos-ruler`
# makes it immediate).
#
#   deploy/integrations/load-rules.sh [kubectl arguments, e.g. --context kind-mgmt]
#
# KAAS_RULES_DIR takes the rule files from another directory (kind-tests/run.sh loads
# copies with shorter timings).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
rules=${KAAS_RULES_DIR:-$root/alerts}
from=()
for file in "$rules"/*.rules.yaml; do from+=("--from-file=$(basename "$file")=$file"); done
kubectl "$@" -n kaas-observer-system create configmap kaas-observer-rules "${from[@]}" \
  --dry-run=client -o yaml \
  | kubectl "$@" apply --server-side --force-conflicts -f -
