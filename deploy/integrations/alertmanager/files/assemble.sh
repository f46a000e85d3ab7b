#!/bin/sh
# Assembles Alertmanager's configuration from base.yml (receivers: yours) and the
# observer's routes.yaml, checks it with amtool, and installs it atomically; then
# tells Alertmanager to reload. Runs in the Alertmanager image (busybox sh, amtool).
#
#   assemble.sh once     write the configuration and exit (the init container)
#   assemble.sh watch    do it every INTERVAL seconds when the inputs changed
#
# ALERTMANAGER_ROUTES_FILE comes from the ConfigMap kaas-observer-integration-files;
# ALERTMANAGER_BASE_FILE and ALERTMANAGER_CONFIG_FILE default to the pod's mounts
# (observer/tests/deploy_manifests.rs runs it with its own).
set -eu
BASE=${ALERTMANAGER_BASE_FILE:-/etc/alertmanager-base/base.yml}
ROUTES=${ALERTMANAGER_ROUTES_FILE:?}
OUT=${ALERTMANAGER_CONFIG_FILE:-/etc/alertmanager-assembled/alertmanager.yml}
INTERVAL=${INTERVAL:-15}

assemble() {
  tmp="$OUT.tmp"
  {
    cat "$BASE"
    if [ -s "$ROUTES" ]; then
      # A receiver for every tenant the routes name that base.yml does not define.
      sed -n 's/^[ -]*receiver: *\(tenant-[a-z0-9-]*\) *$/\1/p' "$ROUTES" | sort -u |
        while read -r receiver; do
          grep -q "^ *- name: *$receiver *$" "$BASE" || printf '  - name: %s\n' "$receiver"
        done
      cat "$ROUTES"
    else
      # The observer has not written its routes yet: everything to the operators.
      printf 'route:\n  receiver: kaas-operators\n  group_by: [alertname, cluster]\n'
    fi
  } > "$tmp"
  if amtool check-config "$tmp" > /dev/null; then
    mv "$tmp" "$OUT"
    return 0
  fi
  echo "assemble.sh: the assembled configuration is invalid; keeping the previous one" >&2
  amtool check-config "$tmp" >&2 || true
  rm -f "$tmp"
  return 1
}

case "${1:-watch}" in
  once)
    assemble
    ;;
  watch)
    last=""
    while true; do
      current=$(cat "$BASE" "$ROUTES" 2>/dev/null | md5sum)
      if [ "$current" != "$last" ] && assemble; then
        wget -q -O /dev/null --post-data='' http://127.0.0.1:9093/-/reload || true
        last=$current
      fi
      sleep "$INTERVAL"
    done
    ;;
esac
