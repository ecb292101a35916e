// SPDX-License-Identifier: GPL-2.0-only
/* A fake mm/memory.c for the build tests. */

static int reuse_count(int count)
{
	if (count != 1)
		return 0;
	return 1;
}
