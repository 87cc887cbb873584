#!/bin/busybox sh
# /init of the PostgreSQL guest's initramfs: load the two virtio modules the 6.12 cloud
# kernel builds as modules (virtio_blk for the root disk, virtio_balloon), mount /dev/vda
# (ext4 is built in) and hand over to the root file system's /sbin/ab-pg-init.
/bin/busybox mkdir -p /proc /sys /dev /newroot /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
insmod /lib/modules/virtio_blk.ko || echo "ABEVENT insmod virtio_blk failed"
insmod /lib/modules/virtio_balloon.ko || echo "ABEVENT insmod virtio_balloon failed"
n=0
while [ ! -b /dev/vda ] && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
if ! mount -t ext4 -o rw,noatime /dev/vda /newroot; then
    echo "ABEVENT cannot mount /dev/vda"
    sleep 2
    poweroff -f
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/ab-pg-init
