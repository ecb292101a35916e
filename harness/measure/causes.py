"""Why each COW copy happened. A kprobe event on the copy function (wp_page_copy) records, for
every copy, the old page's fields that do_wp_page() looked at; the offsets and bits come from
the built kernel (harness.kernel.layout). Each record gets exactly one cause, checked in this
order:

- `zero_page`: no struct page, and the PTE maps the shared zero page (a first write after a read);
- `huge_page`: a page of a huge page or large folio, its head (PG_head) or a tail page (bit 0 of
  compound_head): a transparent huge page whose mapping a write fault split (COW after fork), or a
  multi-size THP. Its reference and map counts live in the head and in the compound (entire) map
  count, which the probe does not read; on 5.10 and 6.12 do_wp_page() never reuses such a page.
  Checked before `ksm`: a tail page's `mapping` slot holds other fields (6.12 keeps map counts
  there, which can look like PAGE_MAPPING_KSM), and a KSM page is never part of a huge page;
- `ksm`: a KSM page (page->mapping carries PAGE_MAPPING_KSM);
- `shared`: mapped more than once (fork);
- `swapcache`: in the swap cache, and the swap cache's reference is the only extra one
  (the copy that "mm: optimize do_wp_page() for exclusive pages in the swapcache" removes);
- `other_ref`: some other reference is held (an LRU pagevec, a pin, the swap cache and more);
- `other`: none of these (no struct page without the zero page: a raw PFN mapping; or no extra
  reference at all: do_wp_page() could not lock the page).

The reference do_wp_page() takes just before the copy (get_page) is not an extra one.
"""

import re
from collections import Counter
from dataclasses import dataclass

from harness.kernel.layout import Layout
from harness.metrics import CAUSES

EVENT = "cow_cause"
FIELDS = ("page", "pte", "zero_pfn", "flags", "head", "mapping", "mapcount", "refcount")
_RECORD = re.compile(r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+\(\s*(?P<tgid>\d+|-+)\)\s+\[\d+\]\s+\S+\s+[\d.]+: "
                     rf"{EVENT}: \([^)]*\)(?P<fields>.*)$")
_NO_TGID = re.compile(r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+\[\d+\]\s+\S+\s+[\d.]+: "
                      rf"{EVENT}: \([^)]*\)(?P<fields>.*)$")


@dataclass(frozen=True)
class Record:
    """One copy: the copying task's thread id and process id (None when the trace has no tgid)."""
    pid: int
    tgid: int | None
    fields: dict


def parse(trace: str) -> tuple[list[Record], int]:
    """(records, lines that are not records) of the tracing buffer's text."""
    records, unreadable = [], 0
    for line in trace.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _RECORD.match(line) or _NO_TGID.match(line)
        if not match:
            unreadable += 1
            continue
        fields = dict(word.split("=", 1) for word in match.group("fields").split() if "=" in word)
        try:
            values = {name: int(fields[name], 0) for name in FIELDS}
        except (KeyError, ValueError):
            unreadable += 1
            continue
        tgid = match.groupdict().get("tgid")
        records.append(Record(int(match.group("pid")), int(tgid) if tgid and tgid.isdigit() else None, values))
    return records, unreadable


def classify(fields: dict, layout: Layout) -> str:
    """The cause of one copy (see the module's docstring)."""
    v = layout.values
    if fields["page"] == 0:
        pfn = (fields["pte"] & v["PTE_PFN_MASK"]) >> v["PAGE_SHIFT"]
        return "zero_page" if pfn == fields["zero_pfn"] else "other"
    if fields["head"] & 1 or ("PG_head" in v and fields["flags"] >> v["PG_head"] & 1):
        return "huge_page"      # a tail page, or the head: the counts that decide reuse are the huge page's
    if fields["mapping"] & v["PAGE_MAPPING_FLAGS"] == v["PAGE_MAPPING_KSM"]:
        return "ksm"
    mapcount = fields["mapcount"] + 1       # _mapcount starts at -1
    if mapcount > 1:
        return "shared"
    extra = fields["refcount"] - mapcount - 1    # beyond the mapping and do_wp_page()'s own reference
    in_swapcache = all(fields["flags"] >> v[bit] & 1 for bit in ("PG_swapbacked", "PG_swapcache"))
    if in_swapcache and extra == 1:
        return "swapcache"
    return "other_ref" if extra >= 1 else "other"


def count(records: list[Record], layout: Layout, pid: int | None) -> tuple[Counter, Counter | None]:
    """(causes over every record, causes over the records of process pid; None without pid or tgids)."""
    everything, process = Counter(), Counter()
    for record in records:
        cause = classify(record.fields, layout)
        everything[cause] += 1
        if pid is not None and record.tgid == pid:
            process[cause] += 1
    has_tgid = all(record.tgid is not None for record in records)
    return everything, process if pid is not None and has_tgid else None


def parse_lost(text: str) -> int:
    """Records the ring buffer lost ('overrun N' / 'dropped events: N' lines of per-CPU stats)."""
    return sum(int(number) for number in re.findall(r"^(?:overrun|dropped events):\s*(\d+)", text, re.M))


def metrics(records: list[Record], layout: Layout, pid: int | None) -> dict[str, int]:
    """cow_copies.CAUSE (the process's copies) and system.cow_copies.CAUSE (every copy), every cause named."""
    everything, process = count(records, layout, pid)
    found = {f"system.cow_copies.{cause}": everything.get(cause, 0) for cause in CAUSES}
    if process is not None:
        found.update({f"cow_copies.{cause}": process.get(cause, 0) for cause in CAUSES})
    return found
