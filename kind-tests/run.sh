#!/usr/bin/env bash
# End-to-end test of the deployment on real Kubernetes: three kind clusters on one
# Docker engine, the project's images built from its Dockerfiles, and everything
# installed from deploy/.
#
#   1. builds kaas-observer/observer and kaas-observer/cluster-agent (observer/Dockerfile,
#      cluster-agent/Dockerfile) and creates the clusters kaas-mgmt, kaas-wl-1, kaas-wl-2;
#   2. installs into kaas-mgmt: the CRDs, a minimal Cluster API CRD (no providers), the
#      observer (deploy/overlays/dev) and the central stack (deploy/integrations, with
#      MinIO as the bucket), through the overlay in kind-tests/management;
#   3. onboards wl-1 and wl-2 the way Cluster API would: a `Cluster` per workload
#      cluster, marked Provisioned, with its `<name>-kubeconfig` Secret; the observer
#      installs their agents by itself;
#   4. checks that both clusters' data arrives at the central Thanos receive, through
#      the receive gateway;
#   5. applies a tenant pipeline (kind-tests/pipelines/) selecting wl-1 only and checks
#      that it delivers to the tenant's own receiver inside wl-1;
#   6. deletes wl-2 (its Cluster, then the kind cluster) and stops wl-1's agent, then
#      checks that KaasClusterSilent fires for wl-1 and that nothing fires for wl-2.
#
# The alert rules are loaded with shorter timings (for: 30s, a 60 s creation grace
# instead of 15 min) and the observer runs with --silent-after=1m, so the whole run
# takes about 15 minutes after the images are built.
#
# Needs Docker (a running engine), kind, kubectl and python3. Without a Docker engine or
# kind it prints one line, "kind-tests skipped: <why>", and exits 0.
#
#   kind-tests/run.sh                   run; the clusters are deleted afterwards
#   KIND_TESTS_KEEP=1 kind-tests/run.sh keep the clusters for a look around
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "kind-tests skipped: $*"; exit 0; }
command -v docker >/dev/null 2>&1 || skip "no docker command"
docker info >/dev/null 2>&1 || skip "no Docker engine (docker info failed)"
command -v kind >/dev/null 2>&1 || skip "no kind command"
kind version >/dev/null 2>&1 || skip "kind does not run (kind version failed)"
for tool in kubectl python3 openssl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "kind-tests: $tool is needed" >&2; exit 1; }
done

# ---- names the suite relies on ----
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
OBSERVER_IMAGE=kaas-observer/observer:$VERSION
AGENT_IMAGE=kaas-observer/cluster-agent:$VERSION
MGMT=kaas-mgmt
WORKLOADS=(wl-1 wl-2)
NS=kaas-observer-system
TENANT=shop
# The clusters' global ids (`<tenant>.<name>`): the `cluster` label on their data, the
# observer's series and the alerts. The observer's CLI and the `Cluster`s use names.
IDS=("${WORKLOADS[@]/#/$TENANT.}")
# Cluster API onboarding (observer/src/onboarding): a Cluster's tenant is the one an
# administrator mapped its namespace to (`observer cluster-api map`), its labels become
# the cluster's labels, and it is registered once its phase is Provisioned.
CAPI_READY_PHASE=Provisioned
# The receive gateway's node port (kind-tests/management/receive-nodeport.yaml) and the
# control service's (deploy/overlays/dev/nodeport.yaml).
RECEIVE_NODE_PORT=30291
CONTROL_NODE_PORT=30443

work=$(mktemp -d)
cleanup() {
  local status=$?
  if ((status != 0)); then
    echo "kind-tests failed; the observer's last log lines:" >&2
    mgmt -n "$NS" logs deploy/kaas-observer --tail=40 >&2 2>/dev/null || true
  fi
  if [[ "${KIND_TESTS_KEEP:-0}" != 1 ]]; then
    for cluster in "$MGMT" "${WORKLOADS[@]/#/kaas-}"; do
      kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "kind-tests FAILED: $*" >&2; exit 1; }
mgmt() { kubectl --context "kind-$MGMT" "$@"; }
workload() { local name=$1; shift; kubectl --context "kind-kaas-$name" "$@"; }
node_ip() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1-control-plane"; }

# wait_until DESCRIPTION SECONDS COMMAND...: retries COMMAND every 5 s.
wait_until() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what (waited ${seconds}s)"
    sleep 5
  done
  echo "    ok: $what"
}

# The observer CLI inside the observer's pod (the image has the binary, no shell);
# observer_stdin passes this script's standard input on (for `-f -`).
observer() {
  mgmt -n "$NS" exec deploy/kaas-observer -- observer "$@" --token "$ADMIN_TOKEN" </dev/null
}
observer_stdin() {
  mgmt -n "$NS" exec -i deploy/kaas-observer -- observer "$@" --token "$ADMIN_TOKEN"
}

urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# A service's HTTP API through the API server's proxy: proxy CONTEXT NAMESPACE SERVICE PATH
proxy() { kubectl --context "$1" get --raw "/api/v1/namespaces/$2/services/http:$3:http/proxy$4"; }

# The values of LABEL in the result of a PromQL query against Thanos query.
thanos_label_values() {  # QUERY LABEL
  proxy "kind-$MGMT" "$NS" thanos-query "/api/v1/query?query=$(urlencode "$1")" \
    | python3 -c 'import json, sys; print(" ".join(sorted({r["metric"].get(sys.argv[1], "") for r in json.load(sys.stdin)["data"]["result"]})))' "$2"
}
thanos_has() {  # QUERY LABEL VALUE...
  local query=$1 label=$2; shift 2
  local found; found=" $(thanos_label_values "$query" "$label") "
  for value in "$@"; do [[ "$found" == *" $value "* ]] || return 1; done
}
# Clusters of the alerts Alertmanager holds with this name.
alert_clusters() {  # ALERTNAME
  proxy "kind-$MGMT" "$NS" alertmanager "/api/v2/alerts?filter=$(urlencode "alertname=\"$1\"")" \
    | python3 -c 'import json, sys; print(" ".join(sorted({a["labels"].get("cluster", "") for a in json.load(sys.stdin)})))'
}
alert_firing_for() { [[ " $(alert_clusters "$1") " == *" $2 "* ]]; }
cluster_state() {  # NAME
  observer cluster list -o json \
    | python3 -c 'import json, sys
data = json.load(sys.stdin)
items = data if isinstance(data, list) else data.get("items", [])
print(next((c.get("state", "") for c in items if c.get("name") == sys.argv[1]), "absent"))' "$1"
}
cluster_in_state() { [[ " ${*:2} " == *" $(cluster_state "$1") "* ]]; }

step "building $OBSERVER_IMAGE and $AGENT_IMAGE"
DOCKER_BUILDKIT=1 docker build -q -f observer/Dockerfile -t "$OBSERVER_IMAGE" . >/dev/null
DOCKER_BUILDKIT=1 docker build -q -f cluster-agent/Dockerfile -t "$AGENT_IMAGE" . >/dev/null

step "creating the kind clusters $MGMT ${WORKLOADS[*]/#/kaas-}"
for cluster in "$MGMT" "${WORKLOADS[@]/#/kaas-}"; do
  kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  kind create cluster --name "$cluster" --wait 180s >/dev/null
done
kind load docker-image --name "$MGMT" "$OBSERVER_IMAGE" "$AGENT_IMAGE" >/dev/null
for name in "${WORKLOADS[@]}"; do
  kind load docker-image --name "kaas-$name" "$AGENT_IMAGE" >/dev/null
done
MGMT_IP=$(node_ip "$MGMT")
echo "    management node: $MGMT_IP"

step "installing the observer and the central stack into $MGMT"
ADMIN_TOKEN=kot_kind_$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
mgmt apply --server-side -f deploy/crds/ -f kind-tests/manifests/cluster-api-crd.yaml >/dev/null
mgmt apply -f deploy/observer/base/namespace.yaml >/dev/null
mgmt -n "$NS" create secret generic kaas-observer-admin --from-literal=token="$ADMIN_TOKEN" >/dev/null
# The observer's CA as a Secret (the receive gateway mounts its ca.crt), and the
# gateway's server certificate for the node address, from a CA of its own.
(
  cd "$work"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -subj "/CN=kaas-observer cluster CA" -days 30 -out ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out gateway-ca.key 2>/dev/null
  openssl req -x509 -new -key gateway-ca.key -subj "/CN=kind receive gateway CA" -days 30 -out gateway-ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out gateway.key 2>/dev/null
  openssl req -new -key gateway.key -subj "/CN=kaas-receive-gateway" -out gateway.csr
  printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$MGMT_IP" > gateway.ext
  openssl x509 -req -in gateway.csr -CA gateway-ca.crt -CAkey gateway-ca.key -CAcreateserial \
    -days 30 -extfile gateway.ext -out gateway.crt 2>/dev/null
) >/dev/null
mgmt -n "$NS" create secret generic kaas-observer-ca --from-file=ca.crt="$work/ca.crt" --from-file=ca.key="$work/ca.key" >/dev/null
mgmt -n "$NS" create secret tls kaas-receive-gateway-tls --cert="$work/gateway.crt" --key="$work/gateway.key" >/dev/null
mgmt -n "$NS" create secret generic kaas-receive-gateway-ca --from-file=ca.crt="$work/gateway-ca.crt" >/dev/null
mgmt apply -f kind-tests/manifests/minio.yaml >/dev/null
# The alert rules with test timings.
mkdir -p "$work/rules"
for file in alerts/*.rules.yaml; do
  sed -e 's/^\( *for: \)[0-9]*m$/\130s/' -e 's/< 900)/< 60)/g' "$file" > "$work/rules/$(basename "$file")"
done
KAAS_RULES_DIR="$work/rules" deploy/integrations/load-rules.sh --context "kind-$MGMT" >/dev/null
# The overlay's placeholders become this run's addresses.
kubectl kustomize kind-tests/management \
  | sed -e "s#MGMT_NODE_IP#$MGMT_IP#g" \
        -e "s#--control-endpoint=https://kaas-observer.kaas-observer-system.svc:8443#--control-endpoint=https://$MGMT_IP:$CONTROL_NODE_PORT#" \
        -e "s#--receive-gateway-url=https://receive-gateway.observer.example:19291#--receive-gateway-url=https://$MGMT_IP:$RECEIVE_NODE_PORT#" \
  > "$work/management.yaml"
for expected in "--control-endpoint=https://$MGMT_IP:" "--receive-gateway-url=https://$MGMT_IP:" "--grpc-hostname=$MGMT_IP"; do
  grep -q -- "$expected" "$work/management.yaml" || fail "the management overlay has no $expected"
done
mgmt apply --server-side -f "$work/management.yaml" >/dev/null
mgmt -n "$NS" rollout status deploy/kaas-observer --timeout=300s
for workload in statefulset/thanos-receive deploy/kaas-receive-gateway deploy/thanos-query statefulset/thanos-ruler statefulset/alertmanager; do
  mgmt -n "$NS" rollout status "$workload" --timeout=300s
done

step "onboarding ${WORKLOADS[*]} as Cluster API clusters of tenant $TENANT"
mgmt create namespace "$TENANT" >/dev/null
observer tenant create "$TENANT" >/dev/null
observer cluster-api map "$TENANT" --tenant "$TENANT" >/dev/null
region=(one two)
for i in "${!WORKLOADS[@]}"; do
  name=${WORKLOADS[$i]}
  ip=$(node_ip "kaas-$name")
  kind get kubeconfig --internal --name "kaas-$name" \
    | sed "s#https://kaas-$name-control-plane:6443#https://$ip:6443#" > "$work/$name.kubeconfig"
  mgmt -n "$TENANT" create secret generic "$name-kubeconfig" --type=cluster.x-k8s.io/secret \
    --from-file=value="$work/$name.kubeconfig" >/dev/null
  mgmt -n "$TENANT" label secret "$name-kubeconfig" "cluster.x-k8s.io/cluster-name=$name" >/dev/null
  mgmt apply -f - >/dev/null <<YAML
apiVersion: cluster.x-k8s.io/v1beta1
kind: Cluster
metadata:
  name: $name
  namespace: $TENANT
  labels:
    region: ${region[$i]}
spec:
  controlPlaneEndpoint: {host: "$ip", port: 6443}
YAML
  mgmt -n "$TENANT" patch cluster "$name" --subresource=status --type=merge \
    -p "{\"status\":{\"phase\":\"$CAPI_READY_PHASE\",\"infrastructureReady\":true,\"controlPlaneReady\":true}}" >/dev/null
done
for name in "${WORKLOADS[@]}"; do
  wait_until "the observer installed $name's agent, which joined (state active)" 300 cluster_in_state "$name" active
done

step "data from both clusters at the central receiver"
wait_until "the agents' own metrics arrive from ${WORKLOADS[*]}" 300 \
  thanos_has 'up{job="kaas-agent"} == 1' cluster "${IDS[@]}"
wait_until "the observer's fleet series say both are active" 180 \
  thanos_has 'kaas_cluster_info{state="active"} == 1' cluster "${IDS[@]}"

step "a tenant pipeline delivers to the tenant's own receiver"
workload wl-1 apply -f kind-tests/manifests/tenant-receiver.yaml >/dev/null
workload wl-1 -n shop-metrics rollout status deploy/tenant-receiver --timeout=180s
observer_stdin pipeline apply --tenant "$TENANT" -f - < kind-tests/pipelines/shop-own-receiver.yaml
tenant_receiver_has_wl1() {
  proxy "kind-kaas-wl-1" shop-metrics tenant-receiver "/api/v1/query?query=$(urlencode "up{cluster=\"$TENANT.wl-1\"} == 1")" \
    | python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["data"]["result"] else 1)'
}
wait_until "samples from wl-1 reach the tenant's receiver" 240 tenant_receiver_has_wl1

step "deleting wl-2 and stopping wl-1's agent"
mgmt -n "$TENANT" delete cluster wl-2 --wait=false >/dev/null
wait_until "the observer marks wl-2 deleting or deleted" 180 cluster_in_state wl-2 deleting deleted
kind delete cluster --name kaas-wl-2 >/dev/null
workload wl-1 -n kaas-observer scale deploy/cluster-agent --replicas=0 >/dev/null
wait_until "KaasClusterSilent fires for wl-1" 600 alert_firing_for KaasClusterSilent "$TENANT.wl-1"
# By now wl-2 has been gone for as long as wl-1's agent: nothing may have fired for it.
wl2_alerts=$(proxy "kind-$MGMT" "$NS" alertmanager "/api/v2/alerts?filter=$(urlencode "cluster=\"$TENANT.wl-2\"")" \
  | python3 -c 'import json, sys; print(" ".join(sorted({a["labels"]["alertname"] for a in json.load(sys.stdin)})))')
[[ -z "$wl2_alerts" ]] || fail "alerts for the deleted cluster wl-2: $wl2_alerts"
ever_fired=$(thanos_label_values "max_over_time(ALERTS{cluster=\"$TENANT.wl-2\"}[30m])" alertname)
[[ -z "$ever_fired" ]] || fail "the ruler evaluated alerts for the deleted cluster wl-2: $ever_fired"
thanos_has 'kaas_cluster_info{state="deleted"} == 1' cluster "$TENANT.wl-2" \
  || fail "wl-2's tombstone (kaas_cluster_info{state=\"deleted\"}) is not visible"
echo "    ok: no alert for wl-2, and its tombstone is visible"

echo
echo "kind-tests passed"
