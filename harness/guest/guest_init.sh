#!/bin/busybox sh
# /init of the guest initramfs. Brings up the system, the swap disk and the SSH server,
# then reports readiness on the serial console. Settings come from the kernel command
# line: harness.swap=DEVICE, or harness.swap=zram with harness.swap_mb=SIZE (compressed guest
# memory; the kernel's default compressor); harness.data=DEVICE, a disk whose page cache a
# workload reads, is /dev/harness-data. zswap= and transparent_hugepage= are the kernel's own.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup
hostname guest

ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

for word in $(cat /proc/cmdline); do
	case "$word" in
	harness.swap=*) swap_device=${word#harness.swap=} ;;
	harness.swap_mb=*) swap_mb=${word#harness.swap_mb=} ;;
	harness.data=*) ln -sf "${word#harness.data=}" /dev/harness-data ;;
	esac
done
if [ "$swap_device" = zram ]; then
	swap_device=/dev/zram0
	[ -e /sys/block/zram0/disksize ] && echo "${swap_mb}M" > /sys/block/zram0/disksize \
		|| echo "HARNESS-GUEST-ERROR zram: no /sys/block/zram0 (a kernel without CONFIG_ZRAM?)"
fi
if [ -n "$swap_device" ]; then
	mkswap "$swap_device" >/dev/null && swapon "$swap_device" || echo "HARNESS-GUEST-ERROR swap on $swap_device failed"
fi

chmod 700 /root /root/.ssh
chmod 600 /root/.ssh/authorized_keys /etc/dropbear/dropbear_ed25519_host_key
dropbear -s -E -r /etc/dropbear/dropbear_ed25519_host_key -p 22 2>>/var/log/dropbear.log \
	|| echo "HARNESS-GUEST-ERROR dropbear did not start"

echo "@READY_MARKER@"
while true; do sleep 3600; done
