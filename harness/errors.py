"""The two error families. Each class is a one-line template naming the thing and the fix.

`UserError`: the input is wrong (bad patch, unknown variant, missing host tool).
`WorldError`: the world did not cooperate (download failed, command crashed).
One that reaches the CLI is printed as one line, `str(error)`, with the log path (exit 1). Below it they are
caught only where they are a result, not a failure of the command: a cell records the error of its boot as the
reason it is invalid, `harness experiment check` lists it as a failed check, and a few callers catch
one to try the next way (an experiment file that is not one, a collector that is already gone).
"""


class HarnessError(Exception):
    template = "{detail}"

    def __init__(self, **fields):
        self.fields = fields
        super().__init__(self.template.format(**fields))


class UserError(HarnessError):
    pass


class WorldError(HarnessError):
    pass


# --- user mistakes -------------------------------------------------------

class BadSourceSpec(UserError):
    template = ("Kernel source spec '{spec}' is not understood ({why}): use debian:PKG=VERSION[@SUITE], "
                "tarball:URL#sha256=HEX, git:PATH@REF or dir:PATH")


class GitRefMissing(UserError):
    template = "Git ref '{ref}' does not exist in {repo}: check 'git -C {repo} log {ref}'"


class NotAKernelTree(UserError):
    template = "{path} is not a kernel tree (no Makefile with VERSION =): pass the top of a Linux source tree"


class TreeChanged(UserError):
    template = ("The tree {path} changed between reading it and copying it for the build of {variant} (its key "
                "went from {before} to {after}): nothing was built or cached; run again when the tree is not "
                "being edited")


class NotAKernelArchive(UserError):
    template = ("{archive} does not hold a kernel tree (no top-level folder with a Makefile that sets VERSION =): "
                "fix the source spec to name a Linux source archive")


class NoSuchTree(UserError):
    template = "Tree {path} is not a folder: pass a kernel tree folder or a source SPEC such as dir:PATH"


class NothingToCompare(UserError):
    template = ("{runs} holds valid boots of one variant only ({variant}): there is nothing to compare it with; "
                "pass a folder with the other variants too (they are pooled), or run them all in a new folder")


class NotAGitRepository(UserError):
    template = "--tree {path} is not in a git repository: pass a kernel git checkout (or a bare repository)"


class BisectNeedsAMove(UserError):
    template = "Nothing to bisect: {why}; {fix}"


class BadRow(UserError):
    template = "--row {row}: {why}"


class BisectOutputNotEmpty(UserError):
    template = ("Folder {path} is not empty: pick another -o, or go on with the bisection in it with 'harness bisect "
                "--resume {path}'")


class NoRuns(UserError):
    template = ("No run folder (metadata.json with comparison.json) in or below {folders}: pass results/ or the "
                "folders `harness bench` and `harness try` wrote")


class NotABisection(UserError):
    template = ("{path} holds no bisect.json: pass the folder `harness bisect` wrote (its -o), or start a new "
                "bisection without --resume")


class NotAGitTree(UserError):
    template = ("--tree {path} is not the top of a git work tree: pass the top of a kernel git checkout, or "
                "--kernel dir:PATH for a folder as it is")


class SeriesDoesNotApply(UserError):
    template = ("{patch} does not apply to {tree}, as given nor imported (at {where}): rebase it onto that kernel, "
                "or pick the kernel it was written for with --kernel")


class NoChangedCode(UserError):
    template = ("The patch changes no object code of {kernel} as this configuration builds it (variants {variants} "
                "identical to base): nothing to measure; --force runs it anyway, as an A/A control")


class UnexercisedPatch(UserError):
    template = ("No shipped workload phase calls {functions} far more often than its idle phase does ({workloads}; "
                "{source}): "
                "nothing here runs the patch; name a workload that does with --workload, or run every one "
                "with --force (their rows will say `not exercised`)")


class ChecksumMismatch(UserError):
    template = ("{what} has sha256 {actual}, expected {expected}: the spec's checksum is wrong "
                "or the download is corrupt (it was removed; fetch again to download it anew)")


class UnknownExperiment(UserError):
    template = "Experiment '{name}' not found (looked in {folder}): pick one of {known} or pass a .toml path"


class BadExperiment(UserError):
    template = "Experiment file {path} is invalid: {why}"


class UnknownVariant(UserError):
    template = "Variant '{name}' is not in experiment '{experiment}': pick one of {known}"


class UnknownFragment(UserError):
    template = "Kconfig fragment '{name}' not found in {folder}: pick one of {known}"


class MissingPatchFile(UserError):
    template = "Patch {path} does not exist: import it with 'harness patch import' or fix the experiment file"


class PatchParseError(UserError):
    template = "Cannot read a diff from {path}: {why}"


class BadPatchInput(UserError):
    template = "{path} cannot be imported as asked ({why}): {fix}"


class BadGuestSetting(UserError):
    template = "--guest {setting}: {why}"


class HunkNotAnchored(UserError):
    template = ("Hunk {hunk} of {file} ({header}) anchors nowhere in {tree}: the patch is for another "
                "version of {file}; pick the tree it was written for")


class HunkAnchorsTwice(UserError):
    template = ("Hunk {hunk} of {file} ({header}) anchors in {count} places in {tree} (lines {lines}): "
                "the context is ambiguous; import from an unmangled copy of the patch")


class PatchDoesNotApply(UserError):
    template = ("Patch {patch} does not apply to {tree} at {where}: run 'harness patch check {patch} "
                "--tree {tree}' for the diff")


class KconfigOptionDropped(UserError):
    template = "{count} kconfig option(s) did not survive: {details}"


class NoSuchPackage(UserError):
    template = ("Debian has no package {package} in the suites searched ({suites}): --kernel takes a series Debian "
                "packages (5.10, 6.1, 6.12) or a source SPEC")


class PackageNotFound(UserError):
    template = ("Debian package {package} has no version {version} in the suites searched ({suites}); versions "
                "there: {versions}: pick one of them, or name the suite with debian:{package}={version}@SUITE")


class MissingSymbol(UserError):
    template = ("Symbol {symbol} is not in System.map of variant {variant} (inlined or compiled out): "
                "probes need it; add kconfigs/out-of-line.config to the fragments (what keeps a function with one "
                "caller out of line; `harness try -e mm-four-kernels` takes them so) or drop it from the "
                "experiment's probes")


class MissingPackages(UserError):
    template = "Host packages {packages} are missing: run 'sudo {command}', then try again"


class NoCommand(UserError):
    template = ("No command given and stdin is not a terminal: pass one after --, "
                "e.g. 'harness boot --variant base -- uname -r'")


class UnknownWorkload(UserError):
    template = "Workload '{name}' not found in {folder}: pick one of {known}"


class CoverageUnknown(UserError):
    template = ("No count of {functions} in {where} (it counted: {counted}): ask without --run, and the workloads "
                "are profiled on the built kernel")


class ProfilingBootFailed(WorldError):
    template = ("The profiling boot of {workload} on {variant} failed ({reason}): nothing was counted or kept; see "
                "the log, or `harness boot --variant {variant}` to try the kernel by hand")


class NoProfiler(UserError):
    template = ("Experiment {experiment} has no probes, so its boots run no function profiler and cannot count "
                "{functions}: name an experiment with `probes` (the default one has them)")


class BadWorkload(UserError):
    template = "Workload {name} is not usable: {why}"


class PoolWithoutControl(UserError):
    template = ("Pooling {count} run folders needs a control in each (the baseline kernel booted again, "
                "'harness bench --control'), so that a drift of the baseline between them shows: {folders} "
                "{have} none; re-run with --control, or compare each folder on its own")


class NotComparable(UserError):
    template = ("Runs differ in {field} ({values}): only the patches may differ between variants; "
                "compare runs made with the same {field}{hint}")

    def __init__(self, hint: str = "", **fields):
        super().__init__(hint=hint, **fields)


class NotAResultDirectory(UserError):
    template = "{path} holds no run (no {missing}): pass a directory written by 'harness run' or 'harness bench'"


class OutputNotEmpty(UserError):
    template = "Run directory {path} is not empty: pick another -o, or finish the run in it with --resume {path}"


class TryOutputNotEmpty(UserError):
    template = ("Run directory {path} is not empty: pick another -o, or finish the run in it with 'harness bench "
                "--resume {path} -e {path}/try.toml'")


class ResumeTakesNoChoices(UserError):
    template = ("--resume finishes {path} as it was planned, so {options} cannot change it: drop {options}, "
                "or start a new run with -o")


class CacheUnusable(UserError):
    template = "The cache folder {path} cannot be used ({why}): pass a writable folder with --cache-dir"


class NewerFormat(UserError):
    template = ("{path} was written by a newer harness (results format {format}; this one reads up to {known}): "
                "update the harness (git pull, then make setup) to read it")


class BadPlacement(UserError):
    template = "{option} {value}: {why}: {fix}"


class WorkerUnfit(UserError):
    template = "Worker {host} ({address}) {why}: {fix}"


class MissingHostTool(UserError):
    template = "{what} is missing: {fix}"


# --- the world's failures ------------------------------------------------

class CommandFailed(WorldError):
    template = "{command} exited with status {status}; last output: {tail}"


class CommandTimedOut(WorldError):
    template = "{command} did not finish within {timeout:g} s and was killed; last output: {tail}"


class DownloadFailed(WorldError):
    template = "Download of {what} failed ({why}): check the network or the mirror, then retry"


class CellFailed(WorldError):
    template = "{why}"


class BootFailed(WorldError):
    template = "The guest {what}; last console lines: {tail} (console log: {log})"


class GuestCommandFailed(WorldError):
    template = "Guest command {command} exited with status {status}; stderr: {tail}"


class GuestTimedOut(WorldError):
    template = "Guest command {command} did not finish within {timeout:g} s; the guest is being stopped"


class GuestConnectionLost(WorldError):
    template = "The SSH connection to the guest was lost during {command} ({why}): the guest's console log says why"
    output = ""         # what the command printed before the connection went (GuestSession.run)


class ClusterFailed(WorldError):
    template = "The Dask cluster ({where}) {why}: {fix}"


class DiskFull(WorldError):
    template = ("No space left on the file system at {mount} ({free} free) while writing {path}: free space there "
                "('harness clean' frees the cache) or point --cache-dir or -o at another file system")


class NotEnoughSpace(DiskFull):
    template = ("No space left on the file system at {mount} for {what}: it needs {needed} in {path}, {free} are "
                "free ({missing} missing): free space there ('harness clean' frees the cache) or point --cache-dir "
                "at another file system")


class MirrorNotFound(WorldError):
    template = ("No Debian archive entry found in {where}: add a Debian mirror to the host's apt "
                "sources, or use a tarball: or git: kernel source spec")
