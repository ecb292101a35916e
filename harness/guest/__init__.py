"""Guest stage: the initramfs, QEMU, a boot and the SSH session into it."""
