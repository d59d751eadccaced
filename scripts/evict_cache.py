#!/usr/bin/env python3
"""Drops the page cache of every file below the folders given.

The bench calls it after each step on what that step wrote (restored
trees, repositories), once they are synced, so that the next tool does not
pay for reclaiming memory filled by the previous one. The dataset itself
stays cached for every tool alike.
"""
import os
import sys


def evict(path):
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


if __name__ == "__main__":
    os.sync()
    for folder in sys.argv[1:]:
        evict(folder)
