#!/usr/bin/env bash
# Runs kaas-observer's main job locally and shows the result.
#
# Today that is the agent's data path end to end: nginx serves a workload's metrics,
# cluster-agent scrapes them, relabels, buffers on disk and remote-writes to a real
# Prometheus, and the delivered series are printed from Prometheus' API. Then the
# offline checks the observer will run: the example pipelines are validated and a broken
# one is refused with every error. The observer (SQLite) joins this demo with its issue.
#
# Installs what it needs (nginx-light, prometheus) on first use; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for package in nginx-light prometheus; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || need+=("$package")
done
if ((${#need[@]})); then
  echo "==> installing ${need[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi

echo "==> building observer and cluster-agent"
cargo build --locked --quiet --bin observer --bin cluster-agent
observer=target/debug/observer
agent=target/debug/cluster-agent

work=$(mktemp -d)
pids=()
cleanup() {
  # Stop in reverse order: the agent before the backend it ships to.
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nginx_port=$(free_port); prometheus_port=$(free_port); agent_port=$(free_port)

echo "==> a workload (nginx on 127.0.0.1:$nginx_port) exposing metrics"
mkdir -p "$work/www" "$work/nginx"
cat > "$work/www/metrics" <<'METRICS'
# TYPE shop_orders_total counter
shop_orders_total{status="paid"} 1027
shop_orders_total{status="failed"} 3
# TYPE shop_queue_depth gauge
shop_queue_depth 7
go_gc_duration_seconds 0.001
METRICS
cat > "$work/nginx/nginx.conf" <<NGINX
daemon off; master_process off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;
events {} http { access_log off; client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$nginx_port; root $work/www; location / { default_type "text/plain; version=0.0.4"; } } }
NGINX
/usr/sbin/nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & pids+=($!)

echo "==> a backend (Prometheus on 127.0.0.1:$prometheus_port, remote-write receiver)"
echo "global: {}" > "$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.enable-remote-write-receiver --web.listen-address="127.0.0.1:$prometheus_port" \
  >"$work/prometheus.log" 2>&1 & pids+=($!)

for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$prometheus_port/-/ready" >/dev/null 2>&1 && break
  sleep 0.5
done

echo "==> cluster-agent: scrape every 2s, drop go_* metrics, add cluster=demo, ship"
cat > "$work/agent.yaml" <<AGENT
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
externalLabels:
  cluster: demo
pipelines:
  - metadata:
      name: shop
    spec:
      input:
        scrapeInterval: 2s
        scrapeTimeout: 2s
        static:
          targets:
            - addresses: ["127.0.0.1:$nginx_port"]
              labels: {team: shop}
      processors:
        metrics:
          drop: ["go_.*"]
      output:
        prometheusRemoteWrite:
          url: http://127.0.0.1:$prometheus_port/api/v1/write
AGENT
"$agent" check-config --config "$work/agent.yaml"
RUST_LOG=warn "$agent" run --config "$work/agent.yaml" --data-dir "$work/data" \
  --listen-address "127.0.0.1:$agent_port" --otlp-grpc-listen-address 127.0.0.1:0 --kubernetes off & pids+=($!)

query() {
  curl -fsS --get "http://127.0.0.1:$prometheus_port/api/v1/query" --data-urlencode "query=$1"
}
echo "==> waiting for the samples to arrive in Prometheus"
for _ in $(seq 1 60); do
  if query 'shop_orders_total' 2>/dev/null | grep -q '"result":\[{'; then break; fi
  sleep 1
done
echo
echo "Series in Prometheus, as delivered by cluster-agent:"
query '{job="shop"}' | python3 -c '
import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    m = r["metric"]; name = m.pop("__name__")
    labels = ",".join(f"{k}=\"{v}\"" for k, v in sorted(m.items()))
    value = r["value"][1]
    print(f"  {name}{{{labels}}} {value}")'
echo
echo "Agent self-metrics:"
curl -fsS "http://127.0.0.1:$agent_port/metrics" | grep -E '^kaas_agent_pipeline_(samples_sent|samples_in)_total' | sed 's/^/  /'

echo
echo "==> observer pipeline validate: the example pipelines"
"$observer" pipeline validate $(printf -- '-f %s ' examples/pipelines/*.yaml)
echo
echo "==> observer pipeline validate: a broken pipeline is refused with every error"
set +e
"$observer" pipeline validate -f pipeline/testdata/bad/many-errors-at-once.yaml
status=$?
set -e
[[ $status -eq 1 ]] || { echo "expected exit status 1, got $status" >&2; exit 1; }
if ! query 'shop_orders_total' | grep -q '"result":\[{'; then
  echo "demo failed: no samples reached Prometheus" >&2
  exit 1
fi
echo
echo "demo finished: metrics scraped, processed and delivered; broken pipeline refused"
