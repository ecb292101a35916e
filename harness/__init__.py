"""Kernel-benchmark harness: build, boot and measure Linux mm patches."""
