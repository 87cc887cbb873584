#!/bin/busybox sh
# /init of the lab guests' initramfs (busybox-static + memload + two modules).
# Kernel command line: ab.workload=COMP[+COMP...]   (default: idle)
#   idle                 sits, with a little page cache (16 MiB loop device, read once)
#   cache:MIB            MIB MiB of reclaimable page cache (loop device over a
#                        sparse file in the initramfs tmpfs, kept open, re-read every 5 s)
#   steady|ramp|spike|thrash:...   anonymous memory, done by /bin/memload
#   noballoon            do not load virtio_balloon (a guest without the driver)
# Prints once per second on the console:
#   ABREPORT up=<s> MemTotal=<kB> MemAvailable=<kB> MemFree=<kB> Buffers=<kB> Cached=<kB>
#     oom_kill=<n> allocstall=<n> pgscan_kswapd=<n> pgscan_direct=<n>
#     pgsteal_kswapd=<n> pgsteal_direct=<n> memload_restarts=<n> ws_mib=<MiB>
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
if [ "$WL" = "probe" ]; then
    # Used by the host to check that this accelerator really runs a guest.
    echo "ABPROBE ok"
    poweroff -f
fi

# Page cache: sum of cache:N components; idle gets 16 MiB read once.
CACHE_MIB=0
REREAD=0
for comp in $(echo "$WL" | tr '+' ' '); do
    case "$comp" in
        cache:*) CACHE_MIB=$((CACHE_MIB + ${comp#cache:})); REREAD=1 ;;
        idle) [ "$CACHE_MIB" -eq 0 ] && CACHE_MIB=16 ;;
    esac
done
if [ "$CACHE_MIB" -gt 0 ]; then
    # tmpfs/shmem pages are not reclaimable without swap; the loop device's
    # block-device cache over a file there is. The file is sparse: its holes
    # read as zeros without using memory, so only the reclaimable cache counts.
    truncate -s "${CACHE_MIB}M" /cache.img
    losetup /dev/loop0 /cache.img || echo "ABEVENT losetup failed"
    exec 3</dev/loop0
    (
        while :; do
            dd if=/dev/loop0 of=/dev/null bs=1M 2>/dev/null
            [ "$REREAD" -eq 1 ] || break
            sleep 5
        done
    ) &
fi

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

while :; do
    read -r UP _ < /proc/uptime
    read -r WS < /run/ws_mib
    read -r RS < /run/restarts
    awk -v up="$UP" -v ws="${WS:-0}" -v rs="${RS:-0}" '
        FILENAME == "/proc/meminfo" { sub(":", "", $1); m[$1] = $2; next }
        { v[$1] = $2 }
        END {
            stall = v["allocstall_dma"] + v["allocstall_dma32"] + v["allocstall_normal"] + v["allocstall_movable"]
            printf "ABREPORT up=%s MemTotal=%d MemAvailable=%d MemFree=%d Buffers=%d Cached=%d oom_kill=%.0f allocstall=%.0f pgscan_kswapd=%.0f pgscan_direct=%.0f pgsteal_kswapd=%.0f pgsteal_direct=%.0f memload_restarts=%d ws_mib=%d\n",
                up, m["MemTotal"], m["MemAvailable"], m["MemFree"], m["Buffers"], m["Cached"], v["oom_kill"], stall,
                v["pgscan_kswapd"], v["pgscan_direct"], v["pgsteal_kswapd"], v["pgsteal_direct"], rs, ws
        }' /proc/meminfo /proc/vmstat
    sleep 1
done
