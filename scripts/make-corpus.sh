#!/usr/bin/env sh
# Writes flexmoe-run's built-in corpus: the King James Bible (public domain)
# from Debian's bible-kjv, one verse per line without its reference
# ("Ge1:1 In the beginning..." -> "In the beginning..."). Atomic: the output
# appears only when complete.
#   make-corpus.sh <bible executable> <output file>
set -eu
bible=$1
out=$2
mkdir -p "$(dirname "$out")"
"$bible" -f Gen1:1-Rev22:21 | sed 's/^[^ ]* //' > "$out.tmp"
mv "$out.tmp" "$out"
