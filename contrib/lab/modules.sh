# Sourced by build-image.sh and pg/build.sh (which define die): the guests' kernel modules.

# unpack_modules KERNEL_ROOT RELEASE DEST MODULE...
# Each MODULE's first match of MODULE.ko* under KERNEL_ROOT/lib/modules/RELEASE, decompressed
# (.ko.xz with xz, .ko.zst with zstd, a plain .ko copied) to DEST/lib/modules/MODULE.ko, where
# the guests' /init insmods it. A module that is not there is fatal (die).
unpack_modules() {
    local ksrc="$1" krel="$2" dest="$3" m ko
    shift 3
    mkdir -p "$dest/lib/modules"
    for m in "$@"; do
        ko="$(find "$ksrc/lib/modules/$krel" -name "$m.ko*" | head -1)"
        [ -n "$ko" ] || die "module $m not found for $krel in $ksrc"
        case "$ko" in
            *.xz) xz -dc "$ko" >"$dest/lib/modules/$m.ko" ;;
            *.zst) zstd -dcq "$ko" >"$dest/lib/modules/$m.ko" ;;
            *) cp "$ko" "$dest/lib/modules/$m.ko" ;;
        esac
    done
}
