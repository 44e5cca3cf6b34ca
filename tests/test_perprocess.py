"""compiler/llm/perprocess.py: one value per process, made again in a forked child."""

from __future__ import annotations

import os

from compiler.llm.perprocess import PerProcess


def test_a_value_is_made_once_per_process_and_again_in_a_forked_child():
    made = []
    value = PerProcess(lambda: made.append(os.getpid()) or object())
    first = value.get()
    assert value.get() is first and made == [os.getpid()]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its parent's value would hold threads that did not survive the fork
        child = value.get()
        os.write(write, b"new" if child is not first and made[-1] == os.getpid() else b"old")
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 8) == b"new"
    assert value.get() is first and made == [os.getpid()]  # the parent keeps its own
