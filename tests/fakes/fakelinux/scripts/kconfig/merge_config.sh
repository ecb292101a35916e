#!/bin/sh
# Fake merge_config.sh: merge_config.sh -m -O DIR BASE FRAGMENT... appends the fragments to BASE.
while [ $# -gt 0 ]; do
	case "$1" in
	-m) shift ;;
	-O) shift 2 ;;
	*) break ;;
	esac
done
base=$1; shift
for fragment in "$@"; do
	grep -v '^#' "$fragment" | sed -n 's/^\(CONFIG_[A-Z0-9_]*\)=.*/\1=/p' | while read -r prefix; do
		grep -v "^$prefix" "$base" > "$base.new"; mv "$base.new" "$base"
	done
	grep -e '^CONFIG_' -e '^# CONFIG_' "$fragment" >> "$base"
done
