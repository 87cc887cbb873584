#!/bin/sh
# PID 1 of the PostgreSQL lab guest (Debian 12 minbase + PostgreSQL 15), started by the
# initramfs's switch_root. Starts PostgreSQL (Unix socket only: the guest has no network),
# then the workload from the kernel command line:
#   ab.pg=idle                       PostgreSQL runs, no client (default)
#   ab.pg=pgbench:CLIENTS:SECONDS    pgbench -c CLIENTS -j 1 -T SECONDS once PostgreSQL is up
#   ab.pg=warm:MIB[+pgbench:...]     first fill the page cache as a guest that has run for
#                                    days: read the database's files, then MIB MiB of the
#                                    disk itself (reclaimable cache either way)
#   ab.pg=warm:MIB:SECONDS[+...]     the same, spread over SECONDS (8 MiB at a time) and
#                                    alongside pgbench: a cache that fills while the guest works
#   ab.pg_interval=N                 seconds per PGREPORT line (default 5)
# Console, once per second, the busybox guests' line (memload_restarts and ws_mib are 0):
#   ABREPORT up=<s> MemTotal=<kB> MemAvailable=<kB> MemFree=<kB> Buffers=<kB> Cached=<kB>
#     oom_kill=<n> allocstall=<n> pgscan_kswapd=<n> pgscan_direct=<n>
#     pgsteal_kswapd=<n> pgsteal_direct=<n> memload_restarts=0 ws_mib=0
#     psi_some_total=<us> psi_full_total=<us>   (/proc/pressure/memory: time stalled on memory)
# and, while pgbench runs, one PGREPORT line per interval (see /sbin/ab-pgreport.awk).
# Events: "PGEVENT ready up=<s>", "PGEVENT warm done up=<s>", "PGEVENT pgbench exited rc=<n> ...", "PGEVENT postgres exited".
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8
PGBIN=/usr/lib/postgresql/15/bin
PGDATA=/var/lib/postgresql/15/main
PGCONF=/etc/postgresql/15/main/postgresql.conf
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
mount -t tmpfs -o mode=0755,nosuid,nodev,size=16m run /run
# init, the reporters and their helpers never are the OOM victim; PostgreSQL and pgbench
# are ordinary processes (each sets its own score back to 0 below).
echo -1000 > /proc/self/oom_score_adj
hostname pg-guest 2>/dev/null

WL=idle
INTERVAL=5
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ab.pg=*) WL="${arg#ab.pg=}" ;;
        ab.pg_interval=*) INTERVAL="${arg#ab.pg_interval=}" ;;
    esac
done
echo "ABEVENT workload=pg:$WL"

report() {
    while :; do
        read -r UP _ < /proc/uptime
        awk -v up="$UP" '
            FILENAME == "/proc/meminfo" { sub(":", "", $1); m[$1] = $2; next }
            FILENAME == "/proc/pressure/memory" { split($5, kv, "="); psi[$1] = kv[2]; next }
            { v[$1] = $2 }
            END {
                stall = v["allocstall_dma"] + v["allocstall_dma32"] + v["allocstall_normal"] + v["allocstall_movable"]
                printf "ABREPORT up=%s MemTotal=%d MemAvailable=%d MemFree=%d Buffers=%d Cached=%d oom_kill=%.0f allocstall=%.0f pgscan_kswapd=%.0f pgscan_direct=%.0f pgsteal_kswapd=%.0f pgsteal_direct=%.0f memload_restarts=0 ws_mib=0 psi_some_total=%.0f psi_full_total=%.0f\n",
                    up, m["MemTotal"], m["MemAvailable"], m["MemFree"], m["Buffers"], m["Cached"], v["oom_kill"], stall,
                    v["pgscan_kswapd"], v["pgscan_direct"], v["pgsteal_kswapd"], v["pgsteal_direct"],
                    psi["some"], psi["full"]
            }' /proc/meminfo /proc/pressure/memory /proc/vmstat
        sleep 1
    done
}
report &

mkdir -p /run/postgresql /run/pgb
chown postgres:postgres /run/postgresql /run/pgb
chmod 2775 /run/postgresql
(
    echo 0 > /proc/self/oom_score_adj
    exec setpriv --reuid=postgres --regid=postgres --init-groups \
        "$PGBIN/postgres" -D "$PGDATA" -c config_file="$PGCONF" > /run/postgres.log 2>&1
) &
PGPID=$!
n=0
until as_postgres "$PGBIN/pg_isready" -q -h /run/postgresql; do
    n=$((n + 1))
    if ! kill -0 "$PGPID" 2>/dev/null || [ "$n" -gt 600 ]; then
        echo "PGEVENT postgres failed to start"
        tail -n 20 /run/postgres.log
        break
    fi
    sleep 0.1
done
read -r UP _ < /proc/uptime
echo "PGEVENT ready up=$UP"

WARM_MIB=0
WARM_S=0
BENCH=
for comp in $(echo "$WL" | tr '+' ' '); do
    case "$comp" in
        warm:*:*) rest="${comp#warm:}"; WARM_MIB="${rest%%:*}"; WARM_S="${rest#*:}" ;;
        warm:*) WARM_MIB="${comp#warm:}" ;;
        pgbench:*:*) BENCH="$comp" ;;
        idle) ;;
        *) echo "ABEVENT unknown workload component $comp in ab.pg=$WL" ;;
    esac
done
warm_slowly() {
    # 8 MiB chunks of the disk, evenly over WARM_S seconds (usleep-free: sleep takes fractions)
    chunks=$((WARM_MIB / 8))
    [ "$chunks" -gt 0 ] || chunks=1
    pause=$(awk -v s="$WARM_S" -v n="$chunks" 'BEGIN { printf "%.3f", s / n }')
    i=0
    while [ "$i" -lt "$chunks" ]; do
        dd if=/dev/vda of=/dev/null bs=1M skip=$((i * 8)) count=8 2>/dev/null
        i=$((i + 1))
        sleep "$pause"
    done
    read -r UP _ < /proc/uptime
    echo "PGEVENT warm done up=$UP"
}
if [ "$WARM_MIB" -gt 0 ] && [ "$WARM_S" -gt 0 ]; then
    find "$PGDATA" -type f -exec cat {} + > /dev/null 2>&1
    warm_slowly &
elif [ "$WARM_MIB" -gt 0 ]; then
    find "$PGDATA" -type f -exec cat {} + > /dev/null 2>&1
    dd if=/dev/vda of=/dev/null bs=1M count="$WARM_MIB" 2>/dev/null
    read -r UP _ < /proc/uptime
    echo "PGEVENT warm done up=$UP"
fi

case "$BENCH" in
    pgbench:*:*)
        rest="${BENCH#pgbench:}"
        CLIENTS="${rest%%:*}"
        SECONDS_="${rest#*:}"
        (
            echo 0 > /proc/self/oom_score_adj
            # The log file is /run/pgb/tx.<pgbench's pid>: a FIFO the reporter reads, so
            # the per-transaction log never piles up in memory.
            exec setpriv --reuid=postgres --regid=postgres --init-groups sh -c '
                mkfifo /run/pgb/tx.$$ && exec '"$PGBIN"'/pgbench -h /run/postgresql \
                    -c '"$CLIENTS"' -j 1 -T '"$SECONDS_"' -l --log-prefix=/run/pgb/tx postgres' \
                > /run/pgb/out 2>&1
        ) &
        BENCH_PID=$!
        n=0
        while [ ! -p "/run/pgb/tx.$BENCH_PID" ] && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
        awk -v INTERVAL="$INTERVAL" -f /sbin/ab-pgreport.awk < "/run/pgb/tx.$BENCH_PID" &
        wait "$BENCH_PID"
        rc=$?
        echo "PGEVENT pgbench exited rc=$rc $(grep -E '^(tps|number of failed)' /run/pgb/out | tr '\n' ' ')"
        [ "$rc" -eq 0 ] || tail -n 5 /run/pgb/out
        ;;
esac

wait "$PGPID"
echo "PGEVENT postgres exited"
tail -n 20 /run/postgres.log
while :; do sleep 3600; done
