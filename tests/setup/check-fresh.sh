#!/bin/bash
# `make check-fresh`: both lab commands and the install path from nothing, in brand-new Debian 12
# roots built by the fresh-debian tool, one with one-line apt sources and one with deb822
# sources. The apt source format only matters to the set-up, which `make demo` runs whole, so
# the deb822 root runs the demo and not the (30 minute) test suite a second time. Times each
# step and writes benchmarks/results/fresh.md (machine, date, commit, each step's time and exit
# status, and the summary line of `make test`), the only source of the "from nothing" times the
# documentation may quote. Stops at the first failing step, after
# writing what it measured so far.
#
#   bash tests/setup/check-fresh.sh FRESH_DEBIAN
set -uo pipefail
FRESH=${1:?usage: check-fresh.sh path/to/fresh-debian}
OUT=benchmarks/results/fresh.md
LOGDIR=$(mktemp -d)
commit=$(git rev-parse --short HEAD)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
rows=()
status=0

step() {  # step LABEL ARGS...: one fresh-debian run, timed
    local label=$1; shift
    local log="$LOGDIR/${#rows[@]}.log" t0=$SECONDS rc summary
    echo "== check-fresh: $label"
    "$FRESH" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    summary=$(grep -E '^[0-9]+ (passed|failed)|[0-9]+ passed' "$log" | tail -1 | tr '|' '/')
    local s=$((SECONDS - t0))
    rows+=("| $label | $((s / 60)) min $((s % 60)) s | $rc | ${summary:--} |")
    return "$rc"
}

write() {
    {
        echo "# From nothing: the lab commands and the install path in brand-new Debian 12 roots"
        echo
        echo "Machine: $(nproc) CPUs ($cpu), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, Linux $(uname -r). Date: $started. Commit: $commit."
        echo
        echo "\`make check-fresh\` (tests/setup/check-fresh.sh): each row is one run of the fresh-debian"
        echo "tool on a fresh clone of the commit; \`--reset\` rows start from a root holding only git,"
        echo "make, python3 and ca-certificates, and the rows after one reuse its root. Times include"
        echo "building the root on a reset."
        echo
        echo "| step | time | exit | pytest summary |"
        echo "|---|---:|---:|---|"
        printf '%s\n' "${rows[@]}"
    } > "$OUT"
    echo "check-fresh: wrote $OUT"
}

step "one-line sources, --reset: make demo" --reset -- make demo &&
step "one-line sources: make test" -- make test &&
step "one-line sources: tests/setup/check-install.sh" -- bash tests/setup/check-install.sh &&
step "deb822 sources, --reset: make demo" --deb822 --reset -- make demo
status=$?
write
rm -rf "$LOGDIR"
exit "$status"
