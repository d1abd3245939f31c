#!/usr/bin/env bash
# How fast the dashboard's pages are over 1,000,000 jobs on PostgreSQL.
#
#   bash bench/dashboard.sh [jobs]       (default 1000000; needs PostgreSQL at DATABASE_URL)
#
# Fills the schema `errand_dash_bench` with jobs in every state (by SQL, in one statement: 70%
# completed and 5% each dead, cancelled, available, scheduled, retryable and pending, over 5
# queues and 10 kinds, finished within the last hour), serves the dashboard with `errand web`,
# and times each page with curl: the median of 5 requests after one warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${1:-1000000}"
URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
SCHEMA=errand_dash_bench
PORT=8377

cargo build -q --release -p errand-cli
ERRAND=target/release/errand
psql -q "$URL" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE"
"$ERRAND" --database-url "$URL" --schema "$SCHEMA" migrate >/dev/null
echo "filling $JOBS jobs..."
psql -q "$URL" <<SQL
SET search_path = $SCHEMA;
INSERT INTO errand_jobs (kind, queue, args, state, priority, attempt, max_attempts, run_at,
                         created_at, attempted_at, finished_at, errors, idempotency_key)
SELECT 'kind' || (n % 10), 'q' || (n % 5),
       jsonb_build_object('order_id', n, 'note', 'job ' || n),
       s.state, 5, CASE WHEN s.state IN ('available', 'scheduled', 'pending') THEN 0 ELSE 1 END,
       26, now_ms - 3600000 + (n % 3600000) + CASE WHEN s.state = 'scheduled' THEN 7200000 ELSE 0 END,
       now_ms - 3600000 + (n % 3600000),
       CASE WHEN s.state IN ('completed', 'dead', 'cancelled', 'retryable') THEN now_ms - (n % 3600000) END,
       CASE WHEN s.state IN ('completed', 'dead', 'cancelled') THEN now_ms - (n % 3600000) END,
       CASE WHEN s.state IN ('dead', 'retryable') THEN jsonb_build_array(jsonb_build_object(
           'attempt', 1, 'kind', 'permanent', 'message', 'declined: job ' || n,
           'at', now_ms - (n % 3600000), 'duration_ms', 3, 'worker', 'bench')) ELSE '[]' END,
       CASE WHEN n % 3 = 0 THEN 'key-' || n END
FROM generate_series(1, $JOBS) AS n,
     LATERAL (SELECT (extract(epoch FROM now()) * 1000)::bigint AS now_ms) t,
     LATERAL (SELECT CASE WHEN n % 20 < 14 THEN 'completed'
                          WHEN n % 20 = 14 THEN 'dead'
                          WHEN n % 20 = 15 THEN 'cancelled'
                          WHEN n % 20 = 16 THEN 'available'
                          WHEN n % 20 = 17 THEN 'scheduled'
                          WHEN n % 20 = 18 THEN 'retryable'
                          ELSE 'pending' END AS state) s;
-- As autovacuum leaves a table that is not being written: statistics and the visibility map
-- (without it, index-only scans visit the heap for every row of a freshly filled table).
VACUUM ANALYZE errand_jobs;
SQL

"$ERRAND" --database-url "$URL" --schema "$SCHEMA" web --listen "127.0.0.1:$PORT" --no-auth &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/schedules" && break
    sleep 0.2
done

MIDDLE=$((JOBS / 2))
printf "%-44s %10s %8s\n" page "median ms" bytes
for page in / /jobs "/jobs?state=dead" "/jobs?state=available&queue=q1" "/jobs?kind=kind3" \
            "/jobs?before=$MIDDLE" "/jobs?state=completed&before=$MIDDLE" "/jobs/$MIDDLE" \
            /dead "/dead?before=$MIDDLE" /schedules; do
    curl -s -o /dev/null "http://127.0.0.1:$PORT$page"
    times=()
    for _ in 1 2 3 4 5; do
        times+=("$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT$page")")
    done
    median=$(printf "%s\n" "${times[@]}" | sort -n | sed -n 3p)
    bytes=$(curl -s "http://127.0.0.1:$PORT$page" | wc -c)
    printf "%-44s %10.1f %8s\n" "$page" "$(echo "$median * 1000" | bc -l)" "$bytes"
done
