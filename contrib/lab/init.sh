#!/bin/busybox sh
# /init of the lab guests' initramfs (busybox-static + memload + two modules).
# Kernel command line: ab.workload=COMP[+COMP...]   (default: idle)
#   idle                 sits, with a little page cache (16 MiB loop device, read once)
#   cache:MIB            MIB MiB of reclaimable page cache (loop device over a
#                        sparse file in the initramfs tmpfs, kept open, re-read every 5 s)
#   cold:MIB             MIB MiB of page cache read once at boot and never again (a second
#                        loop device): the cold cache of a guest that read its files long
#                        ago; "ABEVENT cold cache read up=<s>" once it is in memory
#   steady|ramp|spike|thrash:...   anonymous memory, done by /bin/memload
#   noballoon            do not load virtio_balloon (a guest without the driver)
#   zram:MIB             swap on a zram device of MIB MiB (zstd), so anonymous
#                        pages can be reclaimed
#   cgroup:LIMIT:MIB     a second memload holding MIB MiB in the cgroup v2
#                        /sys/fs/cgroup/ab with memory.max = LIMIT MiB (restarted
#                        after each OOM kill inside the cgroup)
# Prints once per second on the console:
#   ABREPORT up=<s> MemTotal=<kB> MemAvailable=<kB> MemFree=<kB> Buffers=<kB> Cached=<kB>
#     oom_kill=<n> allocstall=<n> pgscan_kswapd=<n> pgscan_direct=<n>
#     pgsteal_kswapd=<n> pgsteal_direct=<n> memload_restarts=<n> ws_mib=<MiB>
#     SwapTotal=<kB> SwapFree=<kB> pswpin=<n> pswpout=<n>
#     psi_some_avg10=<%> psi_some_total=<us> psi_full_avg10=<%> psi_full_total=<us>
#     pass_ms=<ms> alloc_us_mib=<us> cache_read_ms=<ms>
#   and with a cgroup: workload also
#     cg_current=<kB> cg_max=<n> cg_high=<n> cg_oom=<n> cg_oom_kill=<n> cg_pgscan=<n>
#     cg_pgsteal=<n> cg_psi_some_total=<us> cg_psi_full_total=<us> cg_ws_mib=<MiB>
#     cg_restarts=<n>
# The psi_*, pass_ms, alloc_us_mib, cache_read_ms and cg_* fields are the guest's own
# experience, from sources other than the counters the balloon reports.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o size=8m run /run
# init, the reporter and the cache reader must never be the OOM victim.
echo -1000 > /proc/self/oom_score_adj

WL=idle
for arg in $(cat /proc/cmdline); do
    case "$arg" in ab.workload=*) WL="${arg#ab.workload=}" ;; esac
done
echo "ABEVENT workload=$WL"

case "+$WL+" in
    *+noballoon+*) echo "ABEVENT virtio_balloon not loaded (noballoon)" ;;
    *) insmod /lib/modules/virtio_balloon.ko || echo "ABEVENT insmod virtio_balloon failed" ;;
esac
insmod /lib/modules/loop.ko || echo "ABEVENT insmod loop failed"
[ -r /proc/pressure/memory ] || echo "ABEVENT no /proc/pressure/memory (PSI off)"
if [ "$WL" = "probe" ]; then
    # Used by the host to check that this accelerator really runs a guest.
    echo "ABPROBE ok"
    poweroff -f
fi

# Page cache: sum of cache:N components; idle gets 16 MiB read once.
CACHE_MIB=0
COLD_MIB=0
REREAD=0
ZRAM_MIB=0
CG_LIMIT=0
CG_MIB=0
for comp in $(echo "$WL" | tr '+' ' '); do
    case "$comp" in
        cache:*) CACHE_MIB=$((CACHE_MIB + ${comp#cache:})); REREAD=1 ;;
        cold:*) COLD_MIB=$((COLD_MIB + ${comp#cold:})) ;;
        idle) [ "$CACHE_MIB" -eq 0 ] && CACHE_MIB=16 ;;
        zram:*) ZRAM_MIB=${comp#zram:} ;;
        cgroup:*:*) CG_MIB=${comp##*:}; CG_LIMIT=${comp#cgroup:}; CG_LIMIT=${CG_LIMIT%%:*} ;;
    esac
done

if [ "$ZRAM_MIB" -gt 0 ]; then
    # zram: compressed swap in guest RAM. The guests have no disk, and a swap file
    # on the initramfs tmpfs cannot be swapped to; zram is what small cloud guests use.
    for m in zsmalloc lz4_compress lz4hc_compress zram; do
        insmod /lib/modules/$m.ko || echo "ABEVENT insmod $m failed"
    done
    echo zstd > /sys/block/zram0/comp_algorithm 2>/dev/null
    echo "${ZRAM_MIB}M" > /sys/block/zram0/disksize
    if mkswap /dev/zram0 >/dev/null && swapon /dev/zram0; then
        echo "ABEVENT swap on zram0 ${ZRAM_MIB} MiB ($(cat /sys/block/zram0/comp_algorithm))"
    else
        echo "ABEVENT zram swap failed"
    fi
fi

CG=
if [ "$CG_LIMIT" -gt 0 ]; then
    # A memory cgroup (v2) with its own limit: its reclaim and OOM kills are the
    # cgroup's, while the guest as a whole may have plenty available.
    mkdir -p /sys/fs/cgroup
    mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "ABEVENT mount cgroup2 failed"
    echo +memory > /sys/fs/cgroup/cgroup.subtree_control
    CG=/sys/fs/cgroup/ab
    mkdir -p $CG
    echo "${CG_LIMIT}M" > $CG/memory.max || echo "ABEVENT memory.max failed"
    echo 0 > /run/cg_ws_mib
    echo 0 > /run/cg_restarts
    (
        n=0
        while :; do
            sh -c "echo \$\$ > $CG/cgroup.procs && exec /bin/memload steady:$CG_MIB /run/cg_ws_mib"
            n=$((n + 1))
            echo "$n" > /run/cg_restarts
            echo 0 > /run/cg_ws_mib
            sleep 1
        done
    ) &
    echo "ABEVENT cgroup $CG memory.max=${CG_LIMIT}M holding ${CG_MIB} MiB"
fi
if [ "$CACHE_MIB" -gt 0 ]; then
    # tmpfs/shmem pages are not reclaimable without swap; the loop device's
    # block-device cache over a file there is. The file is sparse: its holes
    # read as zeros without using memory, so only the reclaimable cache counts.
    truncate -s "${CACHE_MIB}M" /cache.img
    losetup /dev/loop0 /cache.img || echo "ABEVENT losetup failed"
    exec 3</dev/loop0
    (
        while :; do
            # The time one re-read takes: it grows when the cache no longer fits.
            read -r T0 _ < /proc/uptime
            dd if=/dev/loop0 of=/dev/null bs=1M 2>/dev/null
            read -r T1 _ < /proc/uptime
            awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.0f\n", (b - a) * 1000 }' > /run/cache_ms
            [ "$REREAD" -eq 1 ] || break
            sleep 5
        done
    ) &
fi

if [ "$COLD_MIB" -gt 0 ]; then
    truncate -s "${COLD_MIB}M" /cold.img
    losetup /dev/loop1 /cold.img || echo "ABEVENT losetup cold failed"
    exec 4</dev/loop1
    (
        dd if=/dev/loop1 of=/dev/null bs=1M 2>/dev/null
        read -r UP _ < /proc/uptime
        echo "ABEVENT cold cache read up=$UP"
    ) &
fi

echo 0 > /run/cache_ms
echo 0 > /run/ws_mib
echo 0 > /run/restarts
(
    n=0
    while :; do
        /bin/memload "$WL" /run/ws_mib
        rc=$?
        n=$((n + 1))
        echo "$n" > /run/restarts
        echo 0 > /run/ws_mib
        echo "ABEVENT memload exited rc=$rc restarts=$n"
        sleep 1
    done
) &

PSI=/proc/pressure/memory
[ -r $PSI ] || PSI=/dev/null
CGFILES=
[ -n "$CG" ] && CGFILES="$CG/memory.events $CG/memory.stat $CG/memory.pressure $CG/memory.current /run/cg_ws_mib /run/cg_restarts"
while :; do
    read -r UP _ < /proc/uptime
    read -r WS PASS ALLOC < /run/ws_mib
    read -r RS < /run/restarts
    read -r CMS < /run/cache_ms
    # One awk over every source; files are told apart by name. memory.events and
    # memory.stat share keys (oom_kill): they are kept apart by file.
    awk -v up="$UP" -v ws="${WS:-0}" -v rs="${RS:-0}" -v pass="${PASS:-0}" \
        -v alloc="${ALLOC:-0}" -v cms="${CMS:-0}" -v cg="$CG" '
        FILENAME == "/proc/meminfo" { sub(":", "", $1); m[$1] = $2; next }
        FILENAME == "/proc/vmstat" { v[$1] = $2; next }
        FILENAME ~ /pressure/ {
            p = (FILENAME == "/proc/pressure/memory") ? "psi_" : "cg_psi_"
            for (i = 2; i <= NF; i++) { split($i, kv, "="); s[p $1 "_" kv[1]] = kv[2] }
            next
        }
        FILENAME ~ /memory.events$/ { ev[$1] = $2; next }
        FILENAME ~ /memory.stat$/ { st[$1] = $2; next }
        FILENAME ~ /memory.current$/ { cur = $1; next }
        FILENAME == "/run/cg_ws_mib" { cgws = $1; next }
        FILENAME == "/run/cg_restarts" { cgrs = $1; next }
        END {
            stall = v["allocstall_dma"] + v["allocstall_dma32"] + v["allocstall_normal"] + v["allocstall_movable"]
            printf "ABREPORT up=%s MemTotal=%d MemAvailable=%d MemFree=%d Buffers=%d Cached=%d oom_kill=%.0f allocstall=%.0f pgscan_kswapd=%.0f pgscan_direct=%.0f pgsteal_kswapd=%.0f pgsteal_direct=%.0f memload_restarts=%d ws_mib=%d",
                up, m["MemTotal"], m["MemAvailable"], m["MemFree"], m["Buffers"], m["Cached"], v["oom_kill"], stall,
                v["pgscan_kswapd"], v["pgscan_direct"], v["pgsteal_kswapd"], v["pgsteal_direct"], rs, ws
            printf " SwapTotal=%d SwapFree=%d pswpin=%.0f pswpout=%.0f", m["SwapTotal"], m["SwapFree"], v["pswpin"], v["pswpout"]
            printf " psi_some_avg10=%.2f psi_some_total=%.0f psi_full_avg10=%.2f psi_full_total=%.0f",
                s["psi_some_avg10"], s["psi_some_total"], s["psi_full_avg10"], s["psi_full_total"]
            printf " pass_ms=%.1f alloc_us_mib=%.0f cache_read_ms=%.0f", pass, alloc, cms
            if (cg != "")
                printf " cg_current=%.0f cg_max=%.0f cg_high=%.0f cg_oom=%.0f cg_oom_kill=%.0f cg_pgscan=%.0f cg_pgsteal=%.0f cg_psi_some_total=%.0f cg_psi_full_total=%.0f cg_ws_mib=%d cg_restarts=%d",
                    cur / 1024, ev["max"], ev["high"], ev["oom"], ev["oom_kill"], st["pgscan"], st["pgsteal"],
                    s["cg_psi_some_total"], s["cg_psi_full_total"], cgws, cgrs
            printf "\n"
        }' /proc/meminfo /proc/vmstat $PSI $CGFILES
    sleep 1
done
