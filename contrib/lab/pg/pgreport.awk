# Turns pgbench's per-transaction log (-l; one line per transaction:
#   client_id transaction_no latency_us script_no epoch_s epoch_us [lag] [retries],
# latency "failed" for a failed one) into one PGREPORT line per interval of INTERVAL
# seconds, by the time each transaction ended:
#   PGREPORT up=<guest uptime at print> t=<epoch s, interval start> interval=<s> tx=<n>
#     failed=<n> tps=<tx/interval> lat_avg_ms=<mean> p50_ms=<median> p99_ms=<99th> max_ms=<max>
# Percentiles are exact (nearest rank over every transaction of the interval, sorted with
# sort -n). pgbench writes its log through stdio, so lines arrive in 4 KiB batches: an
# interval is printed once a transaction of a later interval arrives (or at the end), late
# by up to one batch, stamped with its own start time t.
# Variables: INTERVAL (seconds, default 5), SORTED (scratch file, default /run/pgb/sorted).
function emit(start,    i, k50, k99, line, n, p50, p99, sum, mx, cmd, u, up) {
    cmd = "sort -n > " SORTED
    sum = 0; mx = 0
    for (i = 1; i <= cnt; i++) {
        print lat[i] | cmd
        sum += lat[i]
        if (lat[i] > mx) mx = lat[i]
    }
    close(cmd)
    k50 = int((cnt * 50 + 99) / 100); k99 = int((cnt * 99 + 99) / 100)
    n = 0; p50 = 0; p99 = 0
    while ((getline line < SORTED) > 0) {
        n++
        if (n == k50) p50 = line
        if (n == k99) { p99 = line; break }
    }
    close(SORTED)
    up = 0
    if ((getline line < "/proc/uptime") > 0) { split(line, u, " "); up = u[1] }
    close("/proc/uptime")
    printf "PGREPORT up=%s t=%d interval=%d tx=%d failed=%d tps=%.1f lat_avg_ms=%.2f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
        up, start, INTERVAL, cnt, bad, cnt / INTERVAL, (cnt ? sum / cnt / 1000 : 0),
        p50 / 1000, p99 / 1000, mx / 1000
    fflush()
    cnt = 0; bad = 0
    delete lat
}
BEGIN {
    if (INTERVAL < 1) INTERVAL = 5
    if (SORTED == "") SORTED = "/run/pgb/sorted"
    cur = -1; cnt = 0; bad = 0
}
NF >= 6 {
    slot = int($5 / INTERVAL)
    if (cur < 0) cur = slot
    while (slot > cur) { emit(cur * INTERVAL); cur++ }
    if ($3 ~ /^[0-9]+$/) lat[++cnt] = $3 + 0
    else bad++
}
END { if (cur >= 0 && (cnt > 0 || bad > 0)) emit(cur * INTERVAL) }
