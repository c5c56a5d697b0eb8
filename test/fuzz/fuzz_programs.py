#!/usr/bin/env python3
"""Mutation fuzzer for .fmoe program files against the real flexmoe-run.

Writes N corrupted or truncated copies of the seed programs and runs

    flexmoe-run <mutant> --data <text> --steps 2 --eval-every 1
                --eval-batches 1 --progress never

on each, with a timeout. A mutant passes when flexmoe-run either trains
(exit 0) or rejects it with exit 1 and exactly one stderr line
"flexmoe-run: error: <message>". Anything else -- a signal, another exit
code, a timeout, a sanitizer report, an empty or multi-line error, C++
exception text -- is a failure: the mutant is kept in --out for
reproduction and the script exits 1.

Standard library only; see test/fuzz/README.md for campaigns.
"""

import argparse
import collections
import concurrent.futures
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ERROR_PREFIX = "flexmoe-run: error: "

# Values that tend to break size and index arithmetic, as 32- and 64-bit
# little-endian words.
INTERESTING32 = [
    0, 1, 2, 3, 4, 7, 8, 16, 64, 255, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
    0xFFFFFFFE, 0xFFFFFFF0, 0x10000, 0x7FFF, 0x8000, 0xFFFF, 1000000,
    struct.unpack("<I", struct.pack("<f", float("nan")))[0],
    struct.unpack("<I", struct.pack("<f", float("inf")))[0],
    struct.unpack("<I", struct.pack("<f", float("-inf")))[0],
    struct.unpack("<I", struct.pack("<f", -1.0))[0],
    struct.unpack("<I", struct.pack("<f", 1e30))[0],
]
INTERESTING64 = [
    0, 1, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF,
    0xFFFFFFFFFFFFFFFE, 1 << 32, 1 << 40, 1 << 62, 0x100000000000,
]


# Mutation kinds and their relative weights.
KINDS = {
    "flip": 10, "flip_edges": 8, "truncate": 6, "word32": 12, "word64": 5,
    "small_int": 10, "chunk_dup": 4, "chunk_del": 4, "scalar_field": 18,
    "small_word": 23,
}


def mutate(data, rng, kinds=tuple(KINDS)):
    """Returns (mutant bytes, short description of the mutation)."""
    buf = bytearray(data)
    n = len(buf)
    kind = rng.choices(list(kinds), weights=[KINDS[k] for k in kinds])[0]

    def edge_pos():
        # The root table, vtables and the header live near the ends of a
        # flatbuffer; most scalar fields sit in the first or last KB.
        if rng.random() < 0.5:
            return rng.randrange(min(n, 1024))
        return max(0, n - 1 - rng.randrange(min(n, 1024)))

    if kind in ("flip", "flip_edges"):
        count = rng.randint(1, 16)
        for _ in range(count):
            pos = edge_pos() if kind == "flip_edges" else rng.randrange(n)
            if rng.random() < 0.5:
                buf[pos] ^= 1 << rng.randrange(8)
            else:
                buf[pos] = rng.randrange(256)
        return bytes(buf), f"{kind} {count} bytes"
    if kind == "truncate":
        cut = rng.randrange(n)
        return bytes(buf[:cut]), f"truncate at {cut}"
    if kind in ("word32", "word64", "small_int", "scalar_field"):
        width = 8 if kind == "word64" else 4
        if kind == "scalar_field":
            pos = scalar_field_pos(buf, rng)
            if pos is None:
                pos = edge_pos()
            width = 4 if rng.random() < 0.8 else 8
        else:
            pos = rng.randrange(max(1, n - width + 1))
        pos -= pos % width
        if pos + width > n:
            pos = max(0, n - width) // width * width
        if width == 8:
            value = rng.choice(INTERESTING64)
            packed = struct.pack("<Q", value)
        elif kind == "small_int" or rng.random() < 0.3:
            # Small numbers and small negatives: plausible counts, shapes,
            # ids and layer indices that are nevertheless wrong.
            value = rng.randint(-4, 70)
            packed = struct.pack("<i", value)
        else:
            value = rng.choice(INTERESTING32)
            packed = struct.pack("<I", value)
        buf[pos:pos + width] = packed[:n - pos]
        return bytes(buf), f"{kind} @{pos} = {value:#x}"
    if kind == "small_word":
        # Buffer ids in instruction operand lists, shape dimensions, layer
        # indices, top_k, capacities: small aligned words. Replacing one by
        # another small value keeps the file structurally valid and tests
        # the semantic checks.
        for _ in range(64):
            pos = rng.randrange(max(1, n // 4)) * 4
            if pos + 4 <= n and struct.unpack_from("<I", buf, pos)[0] < 512:
                break
        old = struct.unpack_from("<I", buf, pos)[0] if pos + 4 <= n else 0
        value = rng.choice([rng.randrange(64), old + rng.choice([-1, 1]),
                            old * 2, rng.randrange(512)]) & 0xFFFFFFFF
        buf[pos:pos + 4] = struct.pack("<I", value)[:n - pos]
        return bytes(buf), f"small_word @{pos}: {old} -> {value}"
    if kind == "chunk_dup":
        start = rng.randrange(n)
        length = rng.randint(1, min(256, n - start))
        at = rng.randrange(n)
        buf[at:at] = buf[start:start + length]
        return bytes(buf), f"duplicate {length} bytes from {start} at {at}"
    start = rng.randrange(n)
    length = rng.randint(1, min(256, n - start))
    del buf[start:start + length]
    return bytes(buf), f"delete {length} bytes at {start}"


def scalar_field_pos(buf, rng):
    """Picks the position of an inline scalar field of some table.

    Flatbuffers tables start with an soffset to their vtable; the vtable
    lists field offsets relative to the table. Walking from the root and
    from random table-looking positions is cheap and finds real fields far
    more often than a random position.
    """
    n = len(buf)
    if n < 8:
        return None
    for _ in range(8):
        if rng.random() < 0.3:
            table = struct.unpack_from("<I", buf, 0)[0]
        else:
            table = rng.randrange(0, n - 4) & ~3
        if table + 4 > n:
            continue
        vt = table - struct.unpack_from("<i", buf, table)[0]
        if vt < 0 or vt + 4 > n:
            continue
        vt_size, tbl_size = struct.unpack_from("<HH", buf, vt)
        if vt_size < 4 or vt_size % 2 or vt + vt_size > n or tbl_size > 4096:
            continue
        fields = [struct.unpack_from("<H", buf, vt + 4 + 2 * i)[0]
                  for i in range((vt_size - 4) // 2)]
        fields = [f for f in fields if f and table + f + 4 <= n]
        if fields:
            return table + rng.choice(fields)
    return None


SANITIZER = re.compile(r"(AddressSanitizer|UndefinedBehaviorSanitizer|"
                       r"LeakSanitizer|runtime error:|SUMMARY: )")


def classify(returncode, stderr, timed_out):
    """Returns (verdict, detail): verdict is OK_RUN, OK_ERROR or FAIL_*."""
    if timed_out:
        return "FAIL_TIMEOUT", "no exit within the timeout"
    if SANITIZER.search(stderr):
        line = next((l for l in stderr.splitlines() if SANITIZER.search(l)),
                    "")
        return "FAIL_SANITIZER", line.strip()
    if returncode < 0:
        return "FAIL_SIGNAL", f"killed by signal {-returncode}"
    if returncode == 0:
        return "OK_RUN", ""
    if returncode != 1:
        return "FAIL_EXIT", f"exit code {returncode}"
    lines = stderr.splitlines()
    if len(lines) != 1:
        return "FAIL_MESSAGE", f"{len(lines)} stderr lines"
    line = lines[0]
    if not line.startswith(ERROR_PREFIX) or not line[len(ERROR_PREFIX):].strip():
        return "FAIL_MESSAGE", "not a 'flexmoe-run: error: <message>' line"
    if "std::" in line or "terminate called" in line or "what()" in line:
        return "FAIL_MESSAGE", "C++ exception text"
    return "OK_ERROR", line[len(ERROR_PREFIX):]


def run_one(job):
    (index, path, run_cmd, timeout) = job
    env = dict(os.environ)
    # Sanitizer builds: report and stop at the first error.
    # One OpenMP thread per run: the workers already use the cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    start = time.monotonic()
    try:
        proc = subprocess.run(run_cmd(path), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=timeout, env=env)
        returncode, stderr, timed_out = (
            proc.returncode, proc.stderr.decode("utf-8", "replace"), False)
    except subprocess.TimeoutExpired as e:
        returncode, timed_out = None, True
        stderr = (e.stderr or b"").decode("utf-8", "replace")
    verdict, detail = classify(returncode, stderr, timed_out)
    return index, verdict, detail, stderr, time.monotonic() - start


def message_key(message):
    """The distinct shape of an error message: numbers and names elided."""
    message = re.sub(r"^\S+\.fmoe: ", "", message)
    message = re.sub(r"'[^']*'", "'…'", message)
    message = re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "N", message)
    return " ".join(message.split()[:8])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flexmoe-run", required=True,
                        help="the flexmoe-run binary to test")
    parser.add_argument("--data", required=True, help="a small text file")
    parser.add_argument("--seed-program", action="append", required=True,
                        help="a valid .fmoe to mutate (repeatable)")
    parser.add_argument("-n", "--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=20.0,
                        help="seconds per run before it counts as a hang")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--out", default="fuzz-failures",
                        help="directory for failing mutants")
    parser.add_argument("--work", default=None,
                        help="directory for the mutants (default: a temp dir)")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="comma-separated mutation kinds to use (default "
                        "all: %(default)s)")
    parser.add_argument("--all-messages", action="store_true",
                        help="list every distinct error message, not the "
                        "40 most common")
    parser.add_argument("--extra-arg", action="append", default=[],
                        help="extra flexmoe-run argument (repeatable)")
    parser.add_argument("--check-seeds", action="store_true",
                        help="first require every seed program to train")
    args = parser.parse_args()

    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        parser.error(f"unknown mutation kinds {unknown}; the kinds are "
                     f"{', '.join(KINDS)}")

    seeds = []
    for path in args.seed_program:
        with open(path, "rb") as f:
            seeds.append((os.path.basename(path), f.read()))

    # A bare name is looked up on PATH (as lit runs it).
    run_bin = (shutil.which(args.flexmoe_run) if os.sep not in args.flexmoe_run
               else os.path.abspath(args.flexmoe_run))
    if not run_bin or not os.access(run_bin, os.X_OK):
        print(f"fuzz: cannot run '{args.flexmoe_run}'", file=sys.stderr)
        return 2
    data = os.path.abspath(args.data)

    def run_cmd(path):
        return [run_bin, path, "--data", data, "--steps", "2",
                "--eval-every", "1", "--eval-batches", "1",
                "--progress", "never"] + args.extra_arg

    work_ctx = (tempfile.TemporaryDirectory(prefix="fmoe-fuzz-")
                if args.work is None else None)
    work = work_ctx.name if work_ctx else args.work
    os.makedirs(work, exist_ok=True)

    if args.check_seeds:
        for path in args.seed_program:
            name = os.path.basename(path)
            _, verdict, detail, stderr, _ = run_one(
                (0, os.path.abspath(path), run_cmd, args.timeout))
            if verdict != "OK_RUN":
                print(f"seed program {name} does not train ({verdict}: "
                      f"{detail}):\n{stderr}", file=sys.stderr)
                return 2

    rng = random.Random(args.seed)
    jobs, descriptions = [], {}
    for i in range(args.count):
        name, data_bytes = seeds[i % len(seeds)]
        mutant, what = mutate(data_bytes, rng, kinds)
        path = os.path.join(work, f"mutant-{i:06d}.fmoe")
        with open(path, "wb") as f:
            f.write(mutant)
        descriptions[i] = (name, what, path)
        jobs.append((i, path, run_cmd, args.timeout))

    start = time.monotonic()
    counts = collections.Counter()
    messages = collections.Counter()
    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for index, verdict, detail, stderr, _ in pool.map(run_one, jobs):
            counts[verdict] += 1
            name, what, path = descriptions[index]
            if verdict == "OK_ERROR":
                messages[message_key(detail)] += 1
            elif verdict.startswith("FAIL"):
                failures.append((index, verdict, detail, name, what, stderr))
                os.makedirs(args.out, exist_ok=True)
                base = os.path.join(args.out, f"mutant-{index:06d}")
                with open(path, "rb") as src, open(base + ".fmoe", "wb") as dst:
                    dst.write(src.read())
                with open(base + ".txt", "w") as log:
                    log.write(f"seed: {name}\nmutation: {what}\n"
                              f"verdict: {verdict}: {detail}\n"
                              f"command: {' '.join(run_cmd(base + '.fmoe'))}\n"
                              f"--- stderr ---\n{stderr}")
            os.unlink(path)
    elapsed = time.monotonic() - start
    if work_ctx:
        work_ctx.cleanup()

    print(f"fuzz: {args.count} mutants of {len(seeds)} seed program(s), "
          f"seed {args.seed}, {elapsed:.1f}s")
    for verdict in sorted(counts):
        print(f"  {verdict}: {counts[verdict]}")
    print(f"distinct error messages: {len(messages)}")
    for key, count in messages.most_common(None if args.all_messages else 40):
        print(f"  {count:6d}  {key}")
    if failures:
        print(f"{len(failures)} FAILURES (mutants in {args.out}):")
        for index, verdict, detail, name, what, stderr in failures[:50]:
            print(f"  mutant-{index:06d} [{name}: {what}] {verdict}: {detail}")
        return 1
    print("no failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
