# Sourced by the benchmark scripts: starts private redis-server processes on loopback
# (or on the address in `redis_host`), alone or joined into a Redis Cluster, and reads
# their CPU. The caller sets `work` (a scratch directory) and kills "${redis_pids[@]}" on
# exit.
redis_pids=()
redis_host=${redis_host:-127.0.0.1}

# redis_node PORT [cluster]: a node without persistence, in $work/redis-PORT.
redis_node() {
  local dir=$work/redis-$1
  mkdir -p "$dir"
  local extra=()
  [ "${2:-}" = cluster ] && extra=(--cluster-enabled yes --cluster-config-file nodes.conf)
  # Off loopback (a bridge to the caller's network namespaces) clients come from other
  # addresses, which protected mode refuses without a password.
  [ "$redis_host" = 127.0.0.1 ] || extra+=(--protected-mode no)
  redis-server --port "$1" --bind "$redis_host" --save '' --appendonly no --dir "$dir" \
    "${extra[@]}" > "$dir/log" 2>&1 &
  redis_pids+=($!)
  until redis-cli -h "$redis_host" -p "$1" ping >/dev/null 2>&1; do sleep 0.05; done
}

# redis_cluster PORT...: nodes on these ports joined as masters; waits for every slot.
redis_cluster() {
  local p
  for p in "$@"; do redis_node "$p" cluster; done
  redis-cli --cluster create "${@/#/$redis_host:}" --cluster-replicas 0 --cluster-yes \
    > "$work/cluster-create.log"
  local ok=0
  until [ "$ok" = "$#" ]; do
    sleep 0.1
    ok=0
    for p in "$@"; do
      redis-cli -h "$redis_host" -p "$p" cluster info | grep -q 'cluster_state:ok' && ok=$((ok + 1))
    done
  done
}

# redis_cpu PORT...: CPU seconds (user + sys) the servers used so far, summed.
redis_cpu() {
  local p
  for p in "$@"; do redis-cli -h "$redis_host" -p "$p" info cpu; done |
    awk -F: '/^used_cpu_(sys|user):/ { t += $2 } END { printf "%.3f", t }'
}

# redis_memory PORT...: used_memory in bytes, summed.
redis_memory() {
  local p
  for p in "$@"; do redis-cli -h "$redis_host" -p "$p" info memory; done |
    awk -F: '/^used_memory:/ { t += $2 } END { printf "%d", t }'
}
