from harness import workloads
from harness.measure import drivers


def test_every_driver_a_definition_may_name_has_a_class():
    # workload.toml files are checked against workloads.DRIVERS without importing the measure stage
    assert set(drivers.DRIVERS) == set(workloads.DRIVERS)
