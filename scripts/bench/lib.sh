# Shared by the scripts in scripts/bench/ (sourced, not run): a throwaway
# PostgreSQL cluster with pg_stat_statements (fsync on, as in production),
# the release shop on a free loopback port, and CPU counters from /proc.
# Every server started here is stopped on exit. Loopback only.

bench_machine() {
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(uname -srm)"
  echo "versions: $(rustc --version); $(/usr/lib/postgresql/*/bin/postgres --version | head -1)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A work directory, and everything stopped and removed on exit.
bench_init() {
  BENCH_WORK=$(mktemp -d /tmp/shop-bench-XXXXXX)
  chmod 755 "$BENCH_WORK"
  # The file mail transport stands in for SMTP here: its files go to memory
  # (tmpfs) when there is one, so that creating some 150 files a second on
  # the disk's file system is not counted as the shop's cost.
  BENCH_MAIL=$(mktemp -d /dev/shm/shop-bench-mail-XXXXXX 2>/dev/null || echo "$BENCH_WORK/mail")
  BENCH_PIDS=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  for pid in "${BENCH_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${PG_DATA:-}" ] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$BENCH_WORK" "$BENCH_MAIL"
}

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Starts a durable cluster with pg_stat_statements; sets PG_PORT, PG_URL.
# BENCH_PG_OPTIONS adds server options (`-c log_statement=all`, to read
# one checkout's statements in $BENCH_WORK/pg/server.log).
bench_pg_start() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PG_DATA="$BENCH_WORK/pg"
  PG_PORT=$(free_port)
  mkdir -p "$PG_DATA"
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DATA"
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C --auth=trust >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -o \
    "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300 \
     -c shared_buffers=256MB -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all \
     ${BENCH_PG_OPTIONS:-}" \
    start >/dev/null
  PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/shop"
  psql -qAt "postgres://postgres@127.0.0.1:$PG_PORT/postgres" -c "CREATE DATABASE shop" >/dev/null
  psql -qAt "$PG_URL" -c "CREATE EXTENSION pg_stat_statements" >/dev/null
}

pg() { psql -qAt "$PG_URL" "$@"; }

# CPU seconds (user + system) of a process, its dead children included.
proc_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f\n", ($14 + $15 + $16 + $17) / hz }' "/proc/$1/stat"
}

# One line of counters: shop CPU s, database CPU s, commits, shop RSS MiB,
# transaction ids handed out (write transactions: a read-only one takes
# none), WAL flushes to disk (what a durable commit waits for; concurrent
# commits share one).
counters() {
  echo "$(proc_cpu "$SHOP_PID") $(pg_cpu) $(pg -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'shop'") $(rss_mib "$SHOP_PID") $(pg -c "SELECT txid_snapshot_xmax(txid_current_snapshot())") $(pg -c "SELECT wal_sync FROM pg_stat_wal")"
}

# CPU seconds of the whole PostgreSQL cluster: the postmaster (with every
# backend that exited) and its live children.
pg_cpu() {
  local main total
  main=$(head -1 "$PG_DATA/postmaster.pid")
  total=$(proc_cpu "$main")
  for child in $(pgrep -P "$main"); do
    total=$(awk -v a="$total" -v b="$(awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$child/stat" 2>/dev/null || echo 0)" 'BEGIN { printf "%.3f", a + b }')
  done
  echo "$total"
}

# Starts the release shop (extra env as arguments); sets SHOP_PID, SHOP_URL.
# SHOP_BIN=PATH runs another build instead (an A/B against an older commit).
bench_shop_start() {
  local port
  port=$(free_port)
  env APP__SERVER__HOST=127.0.0.1 APP__SERVER__PORT="$port" APP__RATE_LIMIT__ENABLED=false \
    DATABASE_URL="$PG_URL" APP__AUTH__SIGNING_KEY_FILE="$BENCH_WORK/key.pem" \
    APP__AUTH__SERVICE_KEY_FILE="$BENCH_WORK/service-key.pem" \
    APP__NOTIFICATION__EMAIL__FILE_DIR="$BENCH_MAIL" APP__LOG__FORMAT=json \
    "$@" "${SHOP_BIN:-target/release/shop}" serve >>"$BENCH_WORK/shop.log" 2>&1 &
  SHOP_PID=$!
  BENCH_PIDS+=("$SHOP_PID")
  SHOP_URL="http://127.0.0.1:$port"
  for _ in $(seq 1 300); do
    curl -sf "$SHOP_URL/health/ready" >/dev/null && return 0
    kill -0 "$SHOP_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "the shop did not become ready; its log:" >&2
  tail -20 "$BENCH_WORK/shop.log" >&2
  exit 1
}

rss_mib() { awk '/VmRSS/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"; }
