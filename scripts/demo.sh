#!/usr/bin/env bash
# Runs kaas-observer's main job locally and shows the result:
#
#   - an observer with its embedded SQLite (REST API, agent control service, CA);
#   - a real receiver standing in for Thanos receive (Prometheus, remote-write receiver);
#   - three local "clusters": two onboarded with join tokens minted by `observer cluster
#     add`, one listed by a mock KaaS inventory the observer polls (the example binary
#     mock-inventory), each a cluster-agent scraping a node exporter and a shop workload;
#   - the receive gateway (`observer gateway`) in front of that receiver: each agent's
#     central pipeline sends its own metrics, kube-state-metrics' (a recorded exposition)
#     and the node exporter's there with the agent's certificate, and the gateway files
#     them under the cluster and tenant the certificate names;
#   - a tenant pipeline applied with the CLI, selecting all three clusters;
#   - per cluster a node agent (`--role node`) reading container-style log files the
#     demo workload writes, and a tenant log pipeline shipping them as JSON lines to a
#     local recording receiver that counts the distinct lines per cluster;
#   - a tenant trace pipeline: a small span generator (the OpenTelemetry Python SDK)
#     pushes spans over OTLP/HTTP to each cluster's agent, which ships them through the
#     pipeline's disk buffer to a local OTLP receiver that counts the distinct spans
#     per cluster;
#   - then a report: clusters and their states, the pipelines and their conditions,
#     samples, log lines and spans delivered per cluster, the central view through the
#     gateway, the query URL and two example queries.
#
# It stays up until Ctrl-C (and cleans up); with --once it exits 0 after the report.
# Installs what it needs on first use and is safe to run again.
#
#   scripts/demo.sh            build in release mode, run, stay up
#   scripts/demo.sh --once     the same, exit after the report (the test suite runs this)
#
# KAAS_DEMO_BIN_DIR=target/debug uses already built binaries instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
for arg in "$@"; do
  case "$arg" in
    --once) once=true ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

need=()
for package in nginx-light prometheus prometheus-node-exporter curl; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || need+=("$package")
done
if ((${#need[@]})); then
  step "installing ${need[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi

# The span generator and the receiver it exports to: the OpenTelemetry Python SDK with its
# OTLP/HTTP exporter, and the protocol's Python bindings (which the exporter brings).
if ! python3 -c "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http.trace_exporter, opentelemetry.proto.collector.trace.v1.trace_service_pb2" >/dev/null 2>&1; then
  step "installing the OpenTelemetry Python SDK and its OTLP/HTTP exporter (the demo's span generator)"
  python3 -m pip install --quiet 'opentelemetry-sdk==1.45.2' 'opentelemetry-exporter-otlp-proto-http==1.45.2'
fi

if [[ -n "${KAAS_DEMO_BIN_DIR:-}" ]]; then
  bin=$KAAS_DEMO_BIN_DIR
else
  step "building observer, cluster-agent and the mock inventory (release, fat LTO: the first build takes about 9 minutes on 2 cores)"
  cargo build --locked --release --bin observer --bin cluster-agent --example mock-inventory
  bin=target/release
fi
observer="$bin/observer"
agent="$bin/cluster-agent"
mock_inventory="$bin/examples/mock-inventory"
if [[ ! -x "$mock_inventory" && "$bin" == */target/debug ]]; then
  step "building the mock inventory example"
  cargo build --locked -p kaas-observer --example mock-inventory
fi

work=$(mktemp -d)
pids=()
cleanup() {
  # Agents first, then the observer, then the peers.
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {  # URL WHAT
  for _ in $(seq 1 120); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "demo failed: $2 did not come up; logs are in $work" >&2
  tail -n 20 "$work"/*.log >&2 || true
  exit 1
}

nginx_port=$(free_port); exporter_port=$(free_port); prometheus_port=$(free_port)
ksm_port=$(free_port)
api_port=$(free_port); metrics_port=$(free_port); grpc_port=$(free_port)
inventory_port=$(free_port)
gateway_port=$(free_port); gateway_metrics_port=$(free_port)
sink_port=$(free_port)
# Each cluster agent's OTLP/HTTP port, where the span generator pushes.
declare -A otlp_port
for cluster in edge-1 edge-2 edge-3; do otlp_port[$cluster]=$(free_port); done

step "a workload (nginx on 127.0.0.1:$nginx_port) and a node exporter (127.0.0.1:$exporter_port)"
mkdir -p "$work/www" "$work/nginx" "$work/ksm"
# kube-state-metrics as the central pipeline scrapes it: a recorded exposition of the
# pinned version (no Kubernetes runs here), served by nginx.
cp examples/cluster-health/kube-state-metrics-v2.20.0.prom "$work/ksm/metrics"
cat > "$work/www/metrics" <<'METRICS'
# TYPE shop_orders_total counter
shop_orders_total{status="paid"} 1027
shop_orders_total{status="failed"} 3
# TYPE shop_queue_depth gauge
shop_queue_depth 7
METRICS
cat > "$work/nginx/nginx.conf" <<NGINX
daemon off; master_process off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;
events {} http { access_log off; client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$nginx_port; root $work/www; location / { default_type "text/plain; version=0.0.4"; } }
  server { listen 127.0.0.1:$ksm_port; root $work/ksm; location / { default_type "text/plain; version=0.0.4"; } } }
NGINX
/usr/sbin/nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & pids+=($!)
prometheus-node-exporter --web.listen-address="127.0.0.1:$exporter_port" \
  --collector.disable-defaults --collector.cpu --collector.meminfo --collector.loadavg \
  --collector.filesystem --collector.netdev >"$work/node-exporter.log" 2>&1 & pids+=($!)

# The demo workload's container logs, as the kubelet writes them on a node
# (/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log, CRI format): one
# directory per cluster, each read by that cluster's node agent.
log_lines=100
for cluster in edge-1 edge-2 edge-3; do
  dir="$work/pods-$cluster/shop_web-1_0f3c9a52-$cluster-4c1e-9d1a-5e0c7b1f2a3d/web"
  mkdir -p "$dir"
  for i in $(seq -w 1 "$log_lines"); do
    printf '%s stdout F order %s of %s paid\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" "$i" "$cluster"
  done >"$dir/0.log"
done

step "a receiver for logs and spans (127.0.0.1:$sink_port: JSON lines, and OTLP/HTTP spans on /v1/traces; it counts the distinct lines and spans per cluster)"
cat > "$work/sink.py" <<'SINK'
import gzip, json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)
# signal -> cluster -> distinct log bodies or span ids (delivery is at least once)
seen = {"lines": {}, "spans": {}}
lock = threading.Lock()
def spans_of(body):
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    for resource_spans in request.resource_spans:
        cluster = next((a.value.string_value for a in resource_spans.resource.attributes
                        if a.key == "k8s.cluster.name"), "?")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield cluster, span.span_id
def lines_of(body):
    for line in body.splitlines():
        if line.strip():
            doc = json.loads(line)
            yield doc.get("resource", {}).get("k8s.cluster.name", "?"), doc.get("body")
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        traces = self.path == "/v1/traces"
        with lock:
            for cluster, key in (spans_of if traces else lines_of)(body):
                seen["spans" if traces else "lines"].setdefault(cluster, set()).add(key)
        if traces:
            self.reply(200, "application/x-protobuf", ExportTraceServiceResponse().SerializeToString())
        else:
            self.send_response(204); self.end_headers()
    def do_GET(self):  # /lines or /spans: the counts per cluster
        with lock:
            counts = {cluster: len(keys) for cluster, keys in seen.get(self.path.strip("/"), {}).items()}
        self.reply(200, "application/json", json.dumps(counts).encode())
    def reply(self, status, content_type, data):
        self.send_response(status); self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def log_message(self, *args): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
SINK
python3 "$work/sink.py" "$sink_port" >"$work/sink.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$sink_port/lines" "the receiver for logs and spans"

step "the central receiver (Prometheus on 127.0.0.1:$prometheus_port, standing in for Thanos receive)"
echo "global: {}" > "$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.enable-remote-write-receiver --web.listen-address="127.0.0.1:$prometheus_port" \
  >"$work/prometheus.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$prometheus_port/-/ready" Prometheus

step "a mock KaaS inventory (127.0.0.1:$inventory_port) listing cluster edge-3 of tenant shop"
# No kubeconfig in the entry (no Kubernetes runs here): the observer registers the
# cluster and its status names the command that installs the agent.
cat > "$work/inventory.json" <<'INVENTORY'
[{"name": "edge-3", "tenant": "shop", "labels": {"env": "demo"}}]
INVENTORY
"$mock_inventory" --listen "127.0.0.1:$inventory_port" --clusters "$work/inventory.json" \
  >"$work/mock-inventory.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$inventory_port/v1/clusters" "the mock inventory"

# The receive gateway's server certificate (a real install uses its own PKI).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=receive gateway" -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
  -keyout "$work/gateway.key" -out "$work/gateway.crt" 2>/dev/null

step "the observer (SQLite in $work/observer; API on :$api_port, /metrics on :$metrics_port, agent control on :$grpc_port)"
# Everything here is on loopback, which the observer refuses to contact for tenants
# (probes, API endpoints) unless allowed; a real install allows its cluster networks.
# Every cluster gets the central pipeline to the receive gateway: here the agents' own
# metrics, kube-state-metrics and the node exporter at fixed loopback addresses (the
# workload and runtime inputs, and finding the node exporters, need Kubernetes).
RUST_LOG=warn,kaas_observer=info "$observer" serve --data-dir "$work/observer" \
  --listen-address "127.0.0.1:$api_port" --metrics-listen-address "127.0.0.1:$metrics_port" \
  --grpc-listen-address "127.0.0.1:$grpc_port" \
  --egress-allow-cidr 127.0.0.0/8 \
  --inventory-url "http://127.0.0.1:$inventory_port/v1/clusters" --inventory-interval 2s \
  --receive-gateway-url "https://127.0.0.1:$gateway_port" --receive-gateway-ca-file "$work/gateway.crt" \
  --central-scrape-interval 2s --central-inputs \
  --central-kube-state-metrics-address "127.0.0.1:$ksm_port" \
  --central-node-exporter-address "127.0.0.1:$exporter_port" \
  >"$work/observer.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$api_port/readyz" "the observer"

step "the receive gateway (agents on :$gateway_port with their certificates, /metrics on :$gateway_metrics_port)"
RUST_LOG=warn,kaas_observer=info "$observer" gateway \
  --listen-address "127.0.0.1:$gateway_port" --metrics-listen-address "127.0.0.1:$gateway_metrics_port" \
  --tls-cert-file "$work/gateway.crt" --tls-key-file "$work/gateway.key" \
  --client-ca-dir "$work/observer" --database-url "sqlite://$work/observer/observer.db?mode=ro" \
  --upstream-url "http://127.0.0.1:$prometheus_port/api/v1/write" \
  >"$work/gateway.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$gateway_metrics_port/healthz" "the receive gateway"
export KAAS_OBSERVER_URL="http://127.0.0.1:$api_port"
KAAS_OBSERVER_TOKEN=$(cat "$work/observer/admin.token")
export KAAS_OBSERVER_TOKEN

step "onboarding two clusters with join tokens, and the inventory's cluster"
# The inventory's first poll may have created the tenant already (a source creates the
# tenants its clusters name).
"$observer" tenant create shop 2>/dev/null || echo "tenant shop exists (created by the inventory source)"
for cluster in edge-1 edge-2; do
  "$observer" cluster add "$cluster" --tenant shop --label env=demo -o json >"$work/$cluster.json"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["joinToken"])' "$work/$cluster.json" >"$work/$cluster.token"
  echo "cluster $cluster registered; its agent joins with a single-use token"
done
for _ in $(seq 1 60); do
  "$observer" cluster get edge-3 --tenant shop -o json >"$work/edge-3.json" 2>/dev/null && break
  sleep 0.5
done
install=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("installCommand", ""))' "$work/edge-3.json")
if [[ -z "$install" ]]; then
  echo "demo failed: the inventory's cluster edge-3 was not registered with its install command; logs are in $work" >&2
  exit 1
fi
echo "cluster edge-3 registered from the inventory; its status says how to install its agent:"
echo "  $install"
echo "(no Kubernetes here: the demo takes the join token from the same command and runs the agent itself)"
"$observer" cluster join-token edge-3 --tenant shop -o json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["joinToken"])' >"$work/edge-3.token"
# Each node agent joins with a single-use token of its own (until the cluster instance
# hands out node certificates).
for cluster in edge-1 edge-2 edge-3; do
  "$observer" cluster join-token "$cluster" --tenant shop -o json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["joinToken"])' >"$work/$cluster-node.token"
done
for cluster in edge-1 edge-2 edge-3; do
  RUST_LOG=warn,kaas_cluster_agent::control=info "$agent" run \
    --observer "https://127.0.0.1:$grpc_port" --observer-ca-file "$work/observer/ca.crt" \
    --join-token-file "$work/$cluster.token" --data-dir "$work/$cluster" \
    --listen-address "127.0.0.1:$(free_port)" --otlp-grpc-listen-address 127.0.0.1:0 \
    --otlp-http-listen-address "127.0.0.1:${otlp_port[$cluster]}" --zipkin-listen-address 127.0.0.1:0 --kubernetes off \
    --health-report-interval-ms 2000 \
    >"$work/agent-$cluster.log" 2>&1 & pids+=($!)
done
for cluster in edge-1 edge-2 edge-3; do
  # The node's agent: only the log pipelines' node-local inputs, reading the demo's pod
  # log directory instead of /var/log/pods (and no journal here).
  NODE_NAME=demo-worker RUST_LOG=warn,kaas_cluster_agent::control=info "$agent" run --role node \
    --observer "https://127.0.0.1:$grpc_port" --observer-ca-file "$work/observer/ca.crt" \
    --join-token-file "$work/$cluster-node.token" --instance-name demo-worker --data-dir "$work/$cluster-node" \
    --pod-log-dir "$work/pods-$cluster" --journal-dir "$work/no-journal" \
    --listen-address "127.0.0.1:$(free_port)" --otlp-grpc-listen-address 127.0.0.1:0 --otlp-http-listen-address 127.0.0.1:0 --zipkin-listen-address 127.0.0.1:0 --kubernetes off \
    --health-report-interval-ms 2000 \
    >"$work/agent-$cluster-node.log" 2>&1 & pids+=($!)
done

step "applying the tenant's pipeline (scrape the workload and the node exporter every 2s, drop go_*)"
cat > "$work/pipeline.yaml" <<PIPELINE
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata:
  name: shop-metrics
spec:
  input:
    scrapeInterval: 2s
    scrapeTimeout: 2s
    static:
      targets:
        - addresses: ["127.0.0.1:$nginx_port"]
          labels: {job: shop}
        - addresses: ["127.0.0.1:$exporter_port"]
          labels: {job: node}
  processors:
    metrics:
      drop: ["go_.*", "promhttp_.*"]
  output:
    prometheusRemoteWrite:
      url: http://127.0.0.1:$prometheus_port/api/v1/write
  clusterSelector:
    matchLabels: {env: demo}
PIPELINE
"$observer" pipeline apply --tenant shop -f "$work/pipeline.yaml"

step "applying the tenant's log pipeline (the workload's container logs, as JSON lines to the receiver)"
cat > "$work/log-pipeline.yaml" <<PIPELINE
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: LogPipeline
metadata:
  name: shop-logs
spec:
  input:
    runtime:
      enabled: true
      namespaces: {include: [shop]}
      startAt: beginning
  output:
    http:
      url: http://127.0.0.1:$sink_port/
      format: jsonLines
  # Within the cluster's buffer budget beside the metric pipeline (1Gi each by default).
  buffer: {maxBytes: 64Mi}
  clusterSelector:
    matchLabels: {env: demo}
PIPELINE
"$observer" pipeline apply --tenant shop -f "$work/log-pipeline.yaml"

step "applying the tenant's trace pipeline (spans pushed to the agents, over OTLP/HTTP to the receiver)"
cat > "$work/trace-pipeline.yaml" <<PIPELINE
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: TracePipeline
metadata:
  name: shop-traces
spec:
  # No Kubernetes here to review service-account tokens: the demo's generator pushes
  # unauthenticated, which only a cluster whose network policy guards the agent allows.
  input:
    authentication: {mode: unauthenticated}
  output:
    otlp:
      endpoint: http://127.0.0.1:$sink_port
      protocol: http
  buffer: {maxBytes: 64Mi}
  clusterSelector:
    matchLabels: {env: demo}
PIPELINE
"$observer" pipeline apply --tenant shop -f "$work/trace-pipeline.yaml"

# The span generator: per cluster, 10 traces of 2 spans (a checkout and its payment
# call) made with the OpenTelemetry Python SDK and exported over OTLP/HTTP to that
# cluster's agent, again until the agent takes them (404 until the pipeline reaches
# it). The resource names the cluster, as a workload's OTEL_RESOURCE_ATTRIBUTES would
# (the agent's own pod enrichment needs Kubernetes).
trace_count=10
span_count=$((2 * trace_count))
cat > "$work/span-generator.py" <<'GENERATOR'
import sys, time
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
traces = int(sys.argv[1])
pending = dict(target.split("=", 1) for target in sys.argv[2:])  # cluster -> URL
finished = {}
for cluster in pending:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(
        {"service.name": "shop-checkout", "k8s.cluster.name": cluster}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("kaas.demo.generator", "1.0.0")
    for order in range(traces):
        with tracer.start_as_current_span("POST /checkout", attributes={"order": order}):
            with tracer.start_as_current_span("charge card", attributes={"order": order}):
                pass
    finished[cluster] = memory.get_finished_spans()
deadline = time.time() + 120
while pending and time.time() < deadline:
    for cluster, url in list(pending.items()):
        if OTLPSpanExporter(endpoint=url, timeout=5).export(finished[cluster]) == SpanExportResult.SUCCESS:
            print(f"{len(finished[cluster])} spans sent to {cluster}", flush=True)
            del pending[cluster]
    time.sleep(0.5)
sys.exit(f"spans not taken by {sorted(pending)}" if pending else 0)
GENERATOR
python3 "$work/span-generator.py" "$trace_count" \
  "shop.edge-1=http://127.0.0.1:${otlp_port[edge-1]}/v1/traces" \
  "shop.edge-2=http://127.0.0.1:${otlp_port[edge-2]}/v1/traces" \
  "shop.edge-3=http://127.0.0.1:${otlp_port[edge-3]}/v1/traces" \
  >"$work/span-generator.log" 2>&1 & pids+=($!)

query() {
  curl -fsS --get "http://127.0.0.1:$prometheus_port/api/v1/query" --data-urlencode "query=$1"
}
clusters_delivering() {
  query 'count by (cluster) (up{job="shop"})' 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))' 2>/dev/null || echo 0
}
# The agents' own series, through the receive gateway, with the tenant it set.
agents_through_gateway() {
  query 'count by (cluster) (up{job="kaas-agent",tenant="shop"})' 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))' 2>/dev/null || echo 0
}
# kube-state-metrics' series, through the receive gateway, per cluster.
ksm_through_gateway() {
  query 'count by (cluster) (kube_node_info{job="kube-state-metrics",tenant="shop"})' 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))' 2>/dev/null || echo 0
}
# The node exporter's series, through the receive gateway, per cluster (the tenant's
# pipeline scrapes the same exporter as job "node", straight to the receiver).
node_exporter_through_gateway() {
  query 'count by (cluster) (node_load1{job="node-exporter",tenant="shop"})' 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))' 2>/dev/null || echo 0
}
# Distinct demo log lines (`lines`) or spans (`spans`) the receiver got, per cluster.
counts() { curl -fsS "http://127.0.0.1:$sink_port/$1" 2>/dev/null || echo '{}'; }
# Whether each of the three clusters delivered at least $2 of `lines` or `spans` ($1).
complete() {
  counts "$1" | python3 -c 'import json,sys; c=json.load(sys.stdin); sys.exit(0 if len(c)==3 and all(v>=int(sys.argv[1]) for v in c.values()) else 1)' "$2"
}
logs_complete() { complete lines "$log_lines"; }
spans_complete() { complete spans "$span_count"; }
central_view_complete() {
  [[ "$(agents_through_gateway)" == 3 && "$(ksm_through_gateway)" == 3 && "$(node_exporter_through_gateway)" == 3 ]]
}
step "waiting for data from the three clusters to arrive"
for i in $(seq 1 120); do
  n=$(clusters_delivering)
  { central_view_complete && logs_complete && spans_complete; } || n=$((n < 2 ? n : 2))
  printf '\r  clusters delivering: %s of 3 (%ss)' "$n" "$i"
  [[ "$n" == 3 ]] && break
  sleep 1
done
echo
if [[ "$(clusters_delivering)" != 3 ]] || ! central_view_complete || ! logs_complete || ! spans_complete; then
  echo "demo failed: data from the three clusters did not arrive; logs are in $work" >&2
  tail -n 20 "$work"/*.log >&2 || true
  exit 1
fi
# Let the agents report APPLIED (after their health window) and their first health
# reports arrive, so the pipeline's conditions settle.
for _ in $(seq 1 30); do
  "$observer" pipeline get shop-metrics --tenant shop -o json \
    | python3 -c 'import json,sys; c={x["type"]: x["status"] for x in json.load(sys.stdin)["status"]["conditions"]}; sys.exit(0 if c.get("ConfigurationApplied")=="True" and c.get("FlowHealthy")=="True" else 1)' \
    && break
  sleep 1
done

step "report"
echo "Clusters:"
"$observer" cluster list | sed 's/^/  /'
echo
echo "Pipeline shop-metrics:"
"$observer" pipeline get shop-metrics --tenant shop | sed 's/^/  /'
echo
echo "Delivered to the central receiver, per cluster:"
per_cluster() {  # QUERY UNIT
  query "$1" | python3 -c '
import json, sys
unit = sys.argv[1]
for r in sorted(json.load(sys.stdin)["data"]["result"], key=lambda r: r["metric"].get("cluster", "")):
    cluster = r["metric"].get("cluster", "?")
    value = float(r["value"][1])
    print(f"  cluster={cluster}: {value:.0f} {unit}")' "$2"
}
per_cluster 'count by (cluster) ({job=~"shop|node"})' "series"
per_cluster 'sum by (cluster) (sum_over_time(scrape_samples_post_metric_relabeling[5m]))' "samples since the start"
echo
echo "Log pipeline shop-logs, delivered to the receiver, per cluster (by k8s.cluster.name):"
counts lines | python3 -c '
import json, sys
written = int(sys.argv[1])
for cluster, n in sorted(json.load(sys.stdin).items()):
    print(f"  cluster={cluster}: {n} lines delivered ({written} written)")' "$log_lines"
echo
echo "Trace pipeline shop-traces, delivered to the receiver, per cluster:"
counts spans | python3 -c '
import json, sys
sent = int(sys.argv[1])
for cluster, n in sorted(json.load(sys.stdin).items()):
    print(f"  cluster={cluster}: {n} spans delivered ({sent} sent)")' "$span_count"
echo
echo "The central view, through the receive gateway (cluster and tenant from each agent's certificate):"
# The central pipeline scrapes each agent at 127.0.0.1:8429, its default address; the
# demo's agents share one host and listen elsewhere, so that scrape finds nothing
# (up 0), but its series show the way every cluster's central data takes.
query 'up{job="kaas-agent"}' | python3 -c '
import json, sys
for r in sorted(json.load(sys.stdin)["data"]["result"], key=lambda r: r["metric"].get("cluster", "")):
    m = r["metric"]
    print("  up{job=\"kaas-agent\", cluster=\"%s\", tenant=\"%s\"}" % (m.get("cluster", "?"), m.get("tenant", "?")))'
query 'kube_node_info{job="kube-state-metrics",node="demo-worker"}' | python3 -c '
import json, sys
for r in sorted(json.load(sys.stdin)["data"]["result"], key=lambda r: r["metric"].get("cluster", "")):
    m = r["metric"]
    print("  kube_node_info{job=\"kube-state-metrics\", cluster=\"%s\", tenant=\"%s\", node=\"%s\"}" % (m.get("cluster", "?"), m.get("tenant", "?"), m.get("node", "?")))'
# The node exporter (the real one, on loopback here), through the gateway.
query 'node_load1{job="node-exporter"}' | python3 -c '
import json, sys
for r in sorted(json.load(sys.stdin)["data"]["result"], key=lambda r: r["metric"].get("cluster", "")):
    m = r["metric"]
    print("  node_load1{job=\"node-exporter\", cluster=\"%s\", tenant=\"%s\"}" % (m.get("cluster", "?"), m.get("tenant", "?")))'
echo
echo "Query them at http://127.0.0.1:$prometheus_port/graph, for example:"
echo "  sum by (cluster) (rate(node_cpu_seconds_total{mode!=\"idle\"}[1m]))"
echo "  sum by (cluster, status) (shop_orders_total)"
echo
echo "Observer: API $KAAS_OBSERVER_URL (admin token in $work/observer/admin.token), metrics at http://127.0.0.1:$metrics_port/metrics"

if $once; then
  echo
  echo "demo finished: three clusters onboarded (one from the inventory), the pipelines applied, metrics, logs and spans from each delivered"
  exit 0
fi
echo
echo "Running; press Ctrl-C to stop and clean up."
while true; do sleep 3600; done
