"""The one list of what must agree before runs are compared, and the rules pooled folders allow."""

from dataclasses import fields
from types import SimpleNamespace

import pandas as pd
import pytest

from harness import comparability, results
from harness.errors import NotComparable


def test_every_checked_field_is_one_the_run_folder_writes():
    assert set(comparability.RUN_FIELDS) <= set(results.RUN_COLUMNS)
    assert set(comparability.PER_HOST_FIELDS) <= set(comparability.RUN_FIELDS)
    assert set(comparability.PER_KERNEL_FIELDS) <= set(comparability.RUN_FIELDS)
    assert set(comparability.FOLDER_FIELDS) <= {f.name for f in fields(results.RunMetadata)}


def test_pooled_folders_allow_other_sources_if_any_does_and_other_hosts_only_if_all_do():
    folders = [SimpleNamespace(mixed_sources=True, mixed_hosts=True),
               SimpleNamespace(mixed_sources=False, mixed_hosts=False)]
    assert comparability.allowances(folders) == (True, False)
    assert comparability.allowances(folders[:1]) == (True, True)


def test_a_field_differing_within_one_variant_is_refused_even_when_sources_may_mix():
    valid = pd.DataFrame({"variant": ["base", "base", "other"], "source": ["a", "b", "c"],
                          "config_hash": ["x", "x", "y"], "host": ["vm", "vm", "vm"]})
    comparability.check_runs(valid.iloc[[0, 2]], mixed_sources=True)
    with pytest.raises(NotComparable, match=r"Runs differ in source \(a vs b\)"):
        comparability.check_runs(valid, mixed_sources=True)


def test_hosts_may_differ_only_when_allowed():
    valid = pd.DataFrame({"variant": ["base", "patched"], "host": ["vm", "w2"], "qemu_version": ["8", "7"]})
    comparability.check_runs(valid, mixed_hosts=True)
    with pytest.raises(NotComparable, match=r"host \(vm vs w2\).*mixed_hosts = true"):
        comparability.check_runs(valid)
