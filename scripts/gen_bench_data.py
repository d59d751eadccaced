#!/usr/bin/env python3
"""Writes the reproducible benchmark dataset (about 1 GB) to the folder given.

- incompressible files of mixed sizes (about 590 MB),
- compressible text in log-like and prose-like files (about 330 MB),
- 10,000 small files (1 to 16 KiB, half text, half random) in 100 folders.

The same seed always gives the same bytes, so runs on different days and
machines back up identical data.
"""
import os
import random
import sys

WORDS = (
    "backup restore snapshot chunk pack index tree blob encrypt decrypt key "
    "password repository folder file mount stage commit verify prune cache "
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "
    "tempor incididunt ut labore et dolore magna aliqua enim minim veniam"
).split()


def write_random(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(rng.randbytes(n))
            left -= n


def text_block(rng, lines):
    out = []
    for i in range(lines):
        if i % 3 == 0:
            out.append(
                "2026-11-%02d %02d:%02d:%02d INFO worker-%d processed %d items in %d ms\n"
                % (rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
                   rng.randint(0, 31), rng.randint(0, 100000), rng.randint(1, 5000))
            )
        else:
            out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))) + "\n")
    return "".join(out).encode()


def write_text(path, size, rng):
    with open(path, "wb") as f:
        written = 0
        while written < size:
            block = text_block(rng, 2000)
            f.write(block[: size - written])
            written += len(block)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_bench_data.py FOLDER")
    root = sys.argv[1]
    rng = random.Random(20261126)
    big = os.path.join(root, "binary")
    os.makedirs(big, exist_ok=True)
    sizes = [120 << 20] * 2 + [50 << 20] * 4 + [10 << 20] * 10 + [1 << 20] * 50
    for i, size in enumerate(sizes):
        write_random(os.path.join(big, "blob-%03d.bin" % i), size, rng)
    text = os.path.join(root, "text")
    os.makedirs(text, exist_ok=True)
    for i, size in enumerate([100 << 20, 100 << 20] + [10 << 20] * 10 + [1 << 20] * 20):
        write_text(os.path.join(text, "log-%03d.txt" % i), size, rng)
    small = os.path.join(root, "small")
    for d in range(100):
        folder = os.path.join(small, "dir-%03d" % d)
        os.makedirs(folder, exist_ok=True)
        for f in range(100):
            size = rng.randint(1024, 16 * 1024)
            path = os.path.join(folder, "file-%03d" % f)
            if f % 2:
                write_random(path, size, rng)
            else:
                write_text(path, size, rng)


if __name__ == "__main__":
    main()
