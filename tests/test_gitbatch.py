"""The document reader's one `git cat-file --batch` (compiler/io/gitbatch.py, compiler/io/gitrepo.py):
the files it lists are the regular files `git ls-tree -r` lists, at any depth and with any name;
a file over the limit is refused unread and the reader goes on; a missing commit, a non-commit and
an ambiguous sha are not found; a forked child gets its own git; a validate starts one git process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from compiler.io import gitrepo
from compiler.io.gitrepo import RefError

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@x.invalid", "GIT_CONFIG_NOSYSTEM": "1", "HOME": os.devnull}


def git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], env=ENV, check=True, capture_output=True,
                          input=data).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> tuple[Path, str]:
    r = tmp_path / "docs"
    deep = r / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / "deep.md").write_text("deep\n", encoding="utf-8")
    (r / "top.md").write_text("top\n", encoding="utf-8")
    (r / "big.md").write_bytes(b"x" * 5000)
    (r / "run.sh").write_text("#!/bin/sh\n", encoding="utf-8")
    os.chmod(r / "run.sh", 0o755)
    (r / "sp ace\tand tab.md").write_text("odd\n", encoding="utf-8")
    os.symlink("/etc/passwd", r / "link.md")
    os.symlink("a", r / "dirlink")
    git(r, "init", "-q", "-b", "main")
    git(r, "add", "-A")
    # a submodule entry (gitlink) and a file whose name is not UTF-8, written straight into the index
    blob = git(r, "hash-object", "-w", "--stdin", data=b"latin\n").decode()
    git(r, "update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},sub")
    git(r, "update-index", "--add", "--index-info", data=b"100644 " + blob.encode() + b"\tcaf\xe9.md\n")
    git(r, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "docs")
    return r, git(r, "rev-parse", "HEAD").decode()


def _ls_tree(r: Path, commit: str) -> list[str]:
    out = []
    for entry in git(r, "ls-tree", "-r", "-z", "--full-tree", commit).split(b"\0"):
        meta, _, name = entry.partition(b"\t")
        if name and meta.split()[1] == b"blob" and meta.split()[0] in (b"100644", b"100755"):
            out.append(name.decode("utf-8", "replace"))
    return sorted(out)


def test_listing_is_ls_trees_regular_files(repo):
    r, commit = repo
    path = gitrepo.private_copy(r / ".git")
    names = gitrepo.regular_files(path, commit)
    assert names == _ls_tree(r, commit)
    assert "a/b/c/d/deep.md" in names and "run.sh" in names and "sp ace\tand tab.md" in names
    assert "caf\ufffd.md" in names
    assert not {"link.md", "dirlink", "sub"} & set(names)


def test_reads_are_the_committed_bytes_and_the_limit_refuses_unread(repo):
    r, commit = repo
    path = gitrepo.private_copy(r / ".git")
    assert gitrepo.read_blob(path, commit, "a/b/c/d/deep.md") == (5, b"deep\n")
    assert gitrepo.read_blob(path, commit, "big.md", 4999) == (5000, None)
    assert gitrepo.read_blob(path, commit, "big.md", 5000) == (5000, b"x" * 5000)
    assert gitrepo.read_blob(path, commit, "top.md", 10) == (4, b"top\n")  # the reader went on after the refusal
    with pytest.raises(RefError) as err:
        gitrepo.read_blob(path, commit, "link.md")
    assert err.value.field == "patterns"


def test_commits_that_are_not_there(repo):
    r, commit = repo
    path = gitrepo.private_copy(r / ".git")
    assert gitrepo.resolve_commit(path, commit[:10]) == commit
    tree = git(r, "rev-parse", f"{commit}^{{tree}}").decode()
    for missing in ("0" * 40, tree, "0000000"):
        with pytest.raises(RefError) as err:
            gitrepo.resolve_commit(path, missing)
        assert err.value.field == "commit" and "not found" in err.value.message


def test_a_forked_child_reads_through_its_own_git(repo):
    r, commit = repo
    path = gitrepo.private_copy(r / ".git")
    assert gitrepo.resolve_commit(path, commit) == commit  # the parent's git is running
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        ok = gitrepo.read_blob(path, commit, "top.md") == (4, b"top\n")
        gitrepo._close_readers()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert gitrepo.read_blob(path, commit, "top.md") == (4, b"top\n")  # and the parent's still answers


def test_a_knowledge_validate_starts_one_git_process(example_taxonomy, tmp_path):
    import shutil
    import sys

    shim = tmp_path / "bin" / "git"  # a git first on PATH that logs each start, then runs the real one
    shim.parent.mkdir()
    log = tmp_path / "starts.log"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {shutil.which("git")} "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    f = example_taxonomy / "knowledge" / "science" / "astronomy" / "solar_system" / "qna.yaml"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run([sys.executable, "-m", "compiler", "validate", str(f), "--root", str(example_taxonomy),
                          "--no-cache"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "(0 errors, 0 warnings)" in run.stdout  # the documents were found and read
    starts = log.read_text().splitlines()
    assert len(starts) == 1 and starts[0].endswith("cat-file --batch"), starts
