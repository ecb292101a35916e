// SPDX-License-Identifier: GPL-2.0
/*
 * The struct offsets, flag bits and constants that harness.measure.causes reads at a COW copy,
 * compiled with the flags of the built tree (harness.kernel.layout) and never run: each DEFINE
 * leaves "->NAME $VALUE" in the assembly, the way the kernel's own asm-offsets.c does.
 */
#include <linux/kbuild.h>
#include <linux/mm.h>
#include <linux/mm_types.h>
#include <linux/page-flags.h>

void harness_cow_layout(void);

void harness_cow_layout(void)
{
	DEFINE(vm_fault_page, offsetof(struct vm_fault, page));
	DEFINE(vm_fault_orig_pte, offsetof(struct vm_fault, orig_pte));
	DEFINE(page_flags, offsetof(struct page, flags));
	DEFINE(page_compound_head, offsetof(struct page, compound_head));
	DEFINE(page_mapping, offsetof(struct page, mapping));
	DEFINE(page_mapcount, offsetof(struct page, _mapcount));
	DEFINE(page_refcount, offsetof(struct page, _refcount));
	DEFINE(PG_swapcache, PG_swapcache);
	DEFINE(PG_swapbacked, PG_swapbacked);
	DEFINE(PG_head, PG_head);
	DEFINE(PAGE_MAPPING_FLAGS, PAGE_MAPPING_FLAGS);
	DEFINE(PAGE_MAPPING_KSM, PAGE_MAPPING_KSM);
	DEFINE(PTE_PFN_MASK, PTE_PFN_MASK);
	DEFINE(PAGE_SHIFT, PAGE_SHIFT);
}
