"""Kernel stage: sources, patches, kconfig fragments, builds."""
