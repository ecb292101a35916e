"""Where cells run: one at a time in this process (the default: timings want the machine to
themselves), N at once on a local Dask cluster (`--jobs N`), or on Dask workers on other machines
(`--cluster ssh://HOST1,HOST2`, which starts them over SSH with Dask's SSHCluster, the scheduler on
HOST1; or `--scheduler tcp://HOST:PORT`, a cluster that is already running).

Builds stay on this machine. A remote worker is sent each bzImage and initramfs it lacks, by
content hash, once (harness/measure/worker.py keeps them), and sends back each cell's Run, Samples
and raw files. Before the first cell every worker is checked: the same harness code, and QEMU.

Failures keep the matrix's meaning: a cell that fails on a worker is an invalid Run like any other.
A worker lost during a cell (its process or its host gone) fails that cell with the reason, and the
cell runs once more on another worker. Ctrl-C, or any error, stops every guest on every worker
before the cluster is closed.
"""

import logging
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from harness.errors import BadPlacement, ClusterFailed, WorkerUnfit
from harness.measure import worker
from harness.measure.cell import Job, record_of

log = logging.getLogger("harness.dispatch")

START_TIMEOUT_S = 120.0       # for the workers to come up
STOP_TIMEOUT_S = 30.0         # for the workers to stop their guests


@dataclass(frozen=True)
class Placement:
    jobs: int | None = 1           # cells at once: on this machine, or per worker host of a cluster;
                                   # None: --jobs auto (bench.cells_at_once decides)
    cluster: str = ""              # ssh://[USER@]HOST[:PORT],...
    scheduler: str = ""            # tcp://HOST:PORT of a running Dask scheduler
    worker_cache: str = worker.WORKER_CACHE    # a remote worker's cache, on the worker
    ssh_config: str = ""           # an OpenSSH client config for --cluster (default: ~/.ssh/config)

    @property
    def remote(self) -> bool:
        return bool(self.cluster or self.scheduler)

    @property
    def parallel(self) -> bool:
        return self.remote or (self.jobs or 1) > 1

    def describe(self) -> str:
        if self.cluster:
            return f"Dask workers over SSH ({self.cluster}), {self.jobs} cell(s) at once on each"
        if self.scheduler:
            return f"the Dask cluster at {self.scheduler}"
        if self.jobs is None:
            return "as many cells at once on this machine as --jobs auto decides"
        return f"{self.jobs} cells at once on this machine (a local Dask cluster)" if self.jobs > 1 else \
            "one cell at a time on this machine"

    def as_dict(self) -> dict:
        return asdict(self)


def ssh_hosts(text: str) -> list[dict]:
    """ssh://[USER@]HOST[:PORT],... -> one dict per host: host, and username and port when given."""
    fix = "write --cluster ssh://HOST1,HOST2 (USER@HOST:PORT for another user or port)"
    if not text.startswith("ssh://") or text == "ssh://":
        raise BadPlacement(option="--cluster", value=text, why="is not ssh://HOST[,HOST...]", fix=fix)
    hosts = []
    for part in text.removeprefix("ssh://").split(","):
        try:
            parsed = urlsplit(f"ssh://{part}")
            port = parsed.port
        except ValueError as error:
            raise BadPlacement(option="--cluster", value=text, why=f"'{part}' is not USER@HOST:PORT ({error})",
                               fix=fix) from None
        if not parsed.hostname or parsed.path or parsed.query or parsed.password:
            raise BadPlacement(option="--cluster", value=text, why=f"'{part}' is not [USER@]HOST[:PORT]", fix=fix)
        hosts.append({key: value for key, value in (("host", parsed.hostname), ("username", parsed.username),
                                                    ("port", port)) if value})
    return hosts


def check(placement: Placement) -> None:
    """Refuse a placement that cannot work, before anything is built."""
    if placement.jobs is not None and placement.jobs < 1:
        raise BadPlacement(option="--jobs", value=placement.jobs, why="is not at least 1", fix="give --jobs 1 or more")
    if placement.cluster and placement.scheduler:
        raise BadPlacement(option="--cluster", value=placement.cluster, why="and --scheduler both name workers",
                           fix="give one of them")
    if placement.cluster:
        ssh_hosts(placement.cluster)
    if placement.scheduler and not placement.scheduler.startswith(("tcp://", "tls://")):
        raise BadPlacement(option="--scheduler", value=placement.scheduler, why="is not a Dask scheduler address",
                           fix="give tcp://HOST:PORT (what `dask scheduler` prints)")
    if placement.ssh_config and not Path(placement.ssh_config).is_file():
        raise BadPlacement(option="--ssh-config", value=placement.ssh_config, why="is not a file",
                           fix="name an OpenSSH client config file")


def pool(placement: Placement, cache_dir: Path, raw_dir: Path):
    """The executor for a placement: Serial (in this process) or DaskPool; a context manager."""
    return DaskPool(placement, cache_dir, raw_dir) if placement.parallel else Serial(placement, cache_dir, raw_dir)


class Serial:
    """One cell at a time in this process: the matrix as it always ran."""

    def __init__(self, placement: Placement, cache_dir: Path, raw_dir: Path):
        self.placement, self.place = placement, worker.Place(str(cache_dir), str(raw_dir))
        self.workers: dict[str, dict] = {}

    def __enter__(self):
        self.workers = {"here": worker.facts(str(self.place.cache_dir))}
        return self

    def __exit__(self, *exc):
        return False

    def cores_per_cell(self) -> int | None:
        """None: one cell at a time takes the guest's vCPUs as the experiment asks."""
        return None

    def memory_per_cell_mb(self) -> int | None:
        return None

    def run(self, jobs, started, finished) -> None:
        for job in jobs:
            started(job)
            finished(job, worker.execute(job, self.place))


class DaskPool:
    """Cells on Dask workers: a local cluster (--jobs), workers over SSH (--cluster) or a running cluster."""

    def __init__(self, placement: Placement, cache_dir: Path, raw_dir: Path):
        self.placement, self.cache_dir, self.raw_dir = placement, cache_dir, raw_dir
        self.cluster = self.client = None
        self.workers: dict[str, dict] = {}      # address -> worker.facts() and its nthreads
        self.sent: dict[str, dict] = {}         # host -> {"sent": n, "kept": n} artifacts
        self.holding: set = set()               # (worker address, digest) known to be in that worker's cache
        self._settings = None

    # --- start and stop ----------------------------------------------------------------

    def __enter__(self):
        import dask
        import distributed  # noqa: F401  (its defaults join dask.config first, or leaving the settings drops them)
        for name in ("distributed", "distributed.deploy", "asyncssh"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # a lost worker fails its task at once (KilledWorker): run() records it and retries it once itself
        self._settings = dask.config.set({"distributed.scheduler.allowed-failures": 0,
                                          "distributed.comm.timeouts.connect": "60s"})
        self._settings.__enter__()
        try:
            self._start()
            self._meet_workers()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self.stop_guests()
        self._close()
        return False

    def _start(self) -> None:
        import distributed
        placement = self.placement
        try:
            if placement.cluster:
                hosts = ssh_hosts(placement.cluster)
                options = [self._connect_options(host) for host in [hosts[0], *hosts]]
                self.cluster = distributed.SSHCluster(
                    [host["host"] for host in [hosts[0], *hosts]], connect_options=options,
                    worker_options={"nthreads": placement.jobs, "death_timeout": 60},
                    scheduler_options={"port": 0, "dashboard_address": None})
            elif not placement.scheduler:
                self.cluster = distributed.LocalCluster(
                    n_workers=placement.jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                    silence_logs=logging.ERROR, local_directory=str(self.cache_dir / "dask"))
            self.client = distributed.Client(self.cluster or placement.scheduler, timeout=START_TIMEOUT_S)
        except Exception as error:     # whatever Dask, asyncssh or the network raise: one line, with its words
            raise ClusterFailed(where=self.placement.describe(), why=f"did not start ({type(error).__name__}: "
                                f"{error})", fix=self._start_fix()) from None

    def _connect_options(self, host: dict) -> dict:
        options = {key: host[key] for key in ("username", "port") if key in host}
        if self.placement.ssh_config:
            options["config"] = [self.placement.ssh_config]
        return options

    def _start_fix(self) -> str:
        if self.placement.cluster:
            return ("check that 'ssh HOST' logs in without a password and that the same Python with the harness "
                    "is there ('harness doctor --worker' on each host)")
        if self.placement.scheduler:
            return "check the address, and that the scheduler is running"
        return "see the log"

    def _close(self) -> None:
        for part in (self.client, self.cluster):
            if part is not None:
                try:
                    part.close()
                except Exception as error:     # closing what is half gone: nothing more to do
                    log.debug("closing %s: %s", type(part).__name__, error)
        self.client = self.cluster = None
        if self._settings is not None:
            self._settings.__exit__(None, None, None)
            self._settings = None

    def stop_guests(self) -> None:
        """Every worker kills the guests it runs (Ctrl-C, or an error here)."""
        if self.client is None:
            return
        try:
            stopped = self.client.run(worker.stop_guests, on_error="return")
            killed = sum(count for count in stopped.values() if isinstance(count, int))
            log.info("stopped %d guest(s) on %d worker(s)", killed, len(stopped))
        except BaseException as error:     # a second Ctrl-C, or workers gone: closing the cluster ends them
            log.warning("could not reach every worker to stop its guests (%s); closing the cluster", error)

    # --- the workers -------------------------------------------------------------------

    def _meet_workers(self) -> None:
        expected = len(ssh_hosts(self.placement.cluster)) if self.placement.cluster else \
            1 if self.placement.scheduler else self.placement.jobs
        try:
            self.client.wait_for_workers(expected, timeout=START_TIMEOUT_S)
        except TimeoutError:
            raise ClusterFailed(where=self.placement.describe(), why=f"has fewer than {expected} worker(s) after "
                                f"{START_TIMEOUT_S:g} s", fix=self._start_fix()) from None
        self._refresh()
        here = worker.facts(self.placement.worker_cache)
        for address, facts in self.workers.items():
            if facts["lacking"]:
                raise WorkerUnfit(host=facts["host"], address=address, why=f"lacks {'; '.join(facts['lacking'])}",
                                  fix=f"run '{facts['install']}' there (as root)")
            if facts["code"] != here["code"]:
                raise WorkerUnfit(host=facts["host"], address=address,
                                  why=f"runs other harness code ({facts['code']}, here {here['code']})",
                                  fix="install this commit of the harness there, at the same path "
                                      f"({here['executable']})")
        for address, facts in sorted(self.workers.items()):
            log.info("worker %s on %s: %d cores, %d MiB, %d cell(s) at once, KVM %s, %s", address, facts["host"],
                     facts["cores"], facts["memory_mb"], facts["nthreads"],
                     "can be opened" if facts["kvm"] else "absent", facts["qemu"])

    def _refresh(self) -> None:
        """The workers there are now (a local cluster restarts a lost one under a new address)."""
        # nthreads() asks the scheduler each time; scheduler_info()'s cached answer can be overwritten by the
        # client's periodic update, which carries no workers
        known = self.client.nthreads()
        new = [address for address in known if address not in self.workers]
        if new:
            facts = self.client.run(worker.facts, self.placement.worker_cache, workers=new)
            for address, found in facts.items():
                self.workers[address] = {**found, "nthreads": known[address]}
        self.workers = {address: facts for address, facts in self.workers.items() if address in known}

    def _per_cell(self, what: str) -> int:
        """A host's cores or memory over the cells its workers run at once, on the tightest host (the workers of
        a local cluster share one host)."""
        hosts: dict[str, list] = {}
        for facts in self.workers.values():
            hosts.setdefault(facts["host"], []).append(facts)
        return min(group[0][what] // sum(facts["nthreads"] for facts in group) for group in hosts.values())

    def cores_per_cell(self) -> int:
        """The cores each cell running at once may have, so that no host runs more vCPUs than it has cores."""
        return max(1, self._per_cell("cores"))

    def memory_per_cell_mb(self) -> int:
        return self._per_cell("memory_mb")

    def _place(self) -> worker.Place:
        if self.placement.remote:
            return worker.Place(self.placement.worker_cache, "", capture_log=True)
        return worker.Place(str(self.cache_dir), str(self.raw_dir), capture_log=True)

    # --- artifacts ---------------------------------------------------------------------

    def send(self, jobs) -> None:
        """Every remote worker gets the bzImages and initramfs of jobs that it lacks (by content hash)."""
        if not self.placement.remote:
            return
        wanted: dict[str, Path] = {}
        for job in jobs:
            wanted.update(worker.artifacts_of(job))
        asked = [address for address in self.workers if any((address, d) not in self.holding for d in wanted)]
        if not asked:      # a later block of --reps auto: every worker already holds these
            return
        lacking = self.client.run(worker.missing, list(wanted), self.placement.worker_cache, workers=asked)
        for address, digests in sorted(lacking.items()):
            self.holding |= {(address, digest) for digest in wanted}
            host = self.workers.get(address, {}).get("host", address)
            tally = self.sent.setdefault(host, {"sent": 0, "kept": 0})
            tally["kept"] += len(wanted) - len(digests)
            for digest in digests:
                started = time.monotonic()
                data = wanted[digest].read_bytes()
                [future] = self.client.scatter([data], workers=[address], hash=False)
                self.client.submit(worker.store, digest, future, self.placement.worker_cache, workers=[address],
                                   allow_other_workers=False, pure=False).result()
                tally["sent"] += 1
                log.info("sent %s (%.1f MiB) to %s in %.1f s", wanted[digest].name, len(data) / 2**20, host,
                         time.monotonic() - started)
            if not digests:
                log.info("%s has all %d kernel and image file(s) already", host, len(wanted))

    # --- cells -------------------------------------------------------------------------

    def run(self, jobs, started, finished) -> None:
        """Every job on the workers; finished(job, Outcome) as each comes back, in the order they end."""
        import distributed
        from distributed.scheduler import KilledWorker
        jobs = list(jobs)
        self.send(jobs)
        pending: dict = {}
        queue = distributed.as_completed()
        try:
            for job in jobs:
                self._submit(job, queue, pending, attempt=0)
            for future in queue:
                job, attempt, avoid = pending.pop(future)
                try:
                    outcome = future.result()
                except KilledWorker as lost:
                    self._lost(job, attempt, lost.last_worker.address, queue, pending, finished)
                    continue
                except worker.ArtifactsMissing:       # a worker that joined after the artifacts were sent
                    self._refresh()
                    self.holding.clear()              # ask every worker again, not what it held before
                    self.send([job])
                    self._submit(job, queue, pending, attempt, avoid)
                    continue
                finished(job, outcome)
        except BaseException:
            self.client.cancel(list(pending))
            raise

    def _submit(self, job: Job, queue, pending: dict, attempt: int, avoid: str = "") -> None:
        allowed = self._allowed(job, avoid)
        if not allowed:
            raise ClusterFailed(where=self.placement.describe(), why=f"has no worker to run {job.label} on"
                                + (f" (host {job.host})" if job.host else " after one was lost"),
                                fix="add workers, or run with --resume once they are back")
        restricted = len(allowed) < len(self.workers)
        future = self.client.submit(worker.execute, job, self._place(), key=f"cell-{uuid.uuid4().hex[:12]}",
                                    workers=allowed if restricted else None, allow_other_workers=False, pure=False)
        pending[future] = (job, attempt, avoid)
        queue.add(future)

    def _allowed(self, job: Job, avoid: str) -> list[str]:
        """The workers job may run on (its host's, not the one just lost), waiting a while for a worker to
        replace a lost one."""
        deadline = time.monotonic() + (START_TIMEOUT_S if avoid else 0)
        while True:
            self._refresh()
            allowed = [address for address, facts in self.workers.items()
                       if address != avoid and (not job.host or facts["host"] == job.host)]
            if allowed or time.monotonic() >= deadline:
                return allowed
            time.sleep(1.0)

    def _lost(self, job: Job, attempt: int, address: str, queue, pending: dict, finished) -> None:
        """A worker died during job: the cell is recorded as failed, and runs once more elsewhere."""
        host = self.workers.get(address, {}).get("host", address)
        again = attempt == 0
        then = "it runs once more on another worker" if again else "it already ran once more: no third try"
        log.warning("worker %s on %s was lost during %s; %s", address, host, job.label, then)
        record = replace(record_of(job, host), reason=f"failed: worker {address} on {host} was lost during the "
                                                       f"cell; {then}")
        finished(job, worker.Outcome(record, [], {}, []))
        if again:
            self._submit(job, queue, pending, 1, avoid=address)

