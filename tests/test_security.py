"""Hostile pull requests, reproduced as real file trees (issue 10, findings 1-4).

Each attack is first shown to work against plain git or to reach a real server where that makes
sense (the control), then kdc is run against the same tree and the canary must stay absent: no
file the hostile command would create, no request carrying the secret, nothing read from outside.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from test_compile import kdc  # noqa: F401 (the in-process CLI fixture)
from teacher_server import QuietHTTPServer, TeacherServer

ROOT = Path(__file__).resolve().parent.parent
LEAF = "knowledge/science/astronomy/solar_system"
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x.invalid", "GIT_CONFIG_NOSYSTEM": "1", "HOME": os.devnull}
SECRET = "hunter2-very-secret-value-42"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


def doc_repo(path: Path, text: str = "# Secret\n\nThe launch code is 0000.\n") -> str:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "doc.md").write_text(text, encoding="utf-8")
    git(path, "add", "-A")
    git(path, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "doc")
    return git(path, "rev-parse", "HEAD")


def checkout(tmp_path: Path) -> Path:
    """A taxonomy checkout (real git work tree) holding the example's solar_system leaf; returns
    the taxonomy root."""
    co = tmp_path / "checkout"
    tax = co / "taxonomy"
    shutil.copytree(ROOT / "taxonomy" / LEAF, tax / LEAF)
    git(co, "init", "-q", "-b", "main")
    return tax


def point_leaf(tax: Path, repo: str, commit: str) -> Path:
    q = tax / LEAF / "qna.yaml"
    text = q.read_text(encoding="utf-8")
    head = text[:text.index("document:\n  repo:")]
    q.write_text(head + f"document:\n  repo: '{repo}'\n  commit: {commit}\n  patterns:\n    - \"*.md\"\n",
                 encoding="utf-8")
    return q




# --------------------------------------------------------------------------- 1. git runs no command
def hostile_bare_repo(where: Path, canary: Path, *, drop: str) -> str:
    """A bare repository committed as plain files whose config makes git run `touch CANARY` when
    it lazy-fetches a missing object. drop='commit': the pinned commit is missing and the promisor
    remote is reached over ssh (core.sshCommand); drop='blob': only the document's blob is missing
    and the promisor is a local path (remote.origin.uploadpack)."""
    src = where.parent / f"{where.name}-src"
    commit = doc_repo(src)
    git(where.parent, "clone", "-q", "--bare", str(src), str(where))  # local: loose objects
    shutil.rmtree(src)
    missing = commit if drop == "commit" else git(where, "rev-parse", f"{commit}:doc.md")
    (where / "objects" / missing[:2] / missing[2:]).unlink()
    remote = ("\turl = ssh://example.invalid/x.git\n" if drop == "commit" else
              f"\turl = {where.parent}\n\tuploadpack = touch {canary}; false\n")
    (where / "config").write_text(
        "[core]\n\trepositoryformatversion = 1\n\tbare = true\n"
        f"\tsshCommand = touch {canary}; false\n\tfsmonitor = touch {canary}; false\n"
        f"\thooksPath = {where}/hooks\n[extensions]\n\tpartialClone = origin\n"
        f"[remote \"origin\"]\n{remote}\tpromisor = true\n", encoding="utf-8")
    return commit


@pytest.mark.parametrize("drop", ["commit", "blob"])
def test_a_committed_repo_with_a_promisor_runs_no_command(tmp_path, kdc, drop):
    tax = checkout(tmp_path)
    canary = tmp_path / "CANARY"
    repo = tax / LEAF / "docs.git"
    commit = hostile_bare_repo(repo, canary, drop=drop)
    # control: plain git in that repository runs the taxonomy's command
    probe = f"{commit}^{{commit}}" if drop == "commit" else f"{commit}:doc.md"
    subprocess.run(["git", "--git-dir", str(repo), "cat-file", "-e", probe], env=GIT_ENV, capture_output=True,
                   cwd=tmp_path)  # the hostile command also touches files in its cwd
    assert canary.exists(), "the attack did not work on plain git: the test would prove nothing"
    canary.unlink()

    q = point_leaf(tax, f"{LEAF.rsplit('/', 0)[0]}/docs.git", commit)
    code, out, err = kdc("validate", "--strict", "--format", "json", "--no-cache", "--root", tax, q)
    assert not canary.exists()
    problems = [(p["rule"], p["message"]) for f in json.loads(out)["files"] for p in f["problems"]]
    if drop == "commit":  # validate says the commit is missing instead of fetching it
        assert code == 1 and problems and problems[0][0] == "document-unresolved"
        assert f"commit {commit} not found" in problems[0][1]
    else:  # the listing is complete, the blob is not: validate reads it as compile does and says so
        assert code == 1 and problems == [("document-unusable", problems[0][1])]
        assert "cannot read doc.md" in problems[0][1]
        with TeacherServer() as srv:
            code, out, err = kdc("compile", tax, "--out", tmp_path / "out", "--teacher", "openai/t",
                                 "--api-base", srv.url, "--samples-per-node", "1")
            assert srv.log == []
        assert not canary.exists()
        assert code == 1 and f"{LEAF}/qna.yaml" in err and "cannot read doc.md" in err


# --------------------------------------------------------------------------- 2. settings trust
class Recorder(BaseHTTPRequestHandler):
    """Records Authorization headers; answers 401 echoing the header (as some providers do)."""
    seen: list[str | None] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        auth = self.headers.get("Authorization")
        type(self).seen.append(auth)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {auth}", "type": "invalid_request_error",
                                     "code": "invalid_api_key"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    Recorder.seen = []
    server = QuietHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", Recorder.seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def example(tmp_path) -> Path:
    """The example taxonomy inside a checkout that also holds its document repos."""
    shutil.copytree(ROOT / "taxonomy", tmp_path / "taxonomy")
    shutil.copytree(ROOT / "build" / "doc-repos", tmp_path / "build" / "doc-repos", symlinks=True)
    (tmp_path / ".git").mkdir()
    return tmp_path / "taxonomy"


def test_the_taxonomys_kdc_yaml_cannot_send_a_key_to_its_server(example, tmp_path, kdc, recorder, monkeypatch):
    url, seen = recorder
    monkeypatch.setenv("SOME_SECRET", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-maintainer-key-123456")
    (example / "kdc.yaml").write_text("samples_per_node: 1\ngates:\n  judge: openai/judge\n"
                                      f"  judge_api_base: {url}\n  judge_api_key_env: SOME_SECRET\n")
    def args(srv):
        return ["compile", example, "--out", tmp_path / "out", "--teacher", "openai/t", "--api-base", srv.url]
    with TeacherServer() as srv:
        code, out, err = kdc(*args(srv))
        assert srv.log == []  # refused before any request
    assert seen == []
    assert code == 2 and "kdc.yaml:4:" in err and "gates.judge_api_base" in err and "--trust-config" in err
    # control: trusted, the file's judge is used -- and its 401 echoing the key is scrubbed
    with TeacherServer() as srv:
        code, out, err = kdc(*args(srv), "--trust-config")
    assert seen and all(a == f"Bearer {SECRET}" for a in seen)
    assert "Incorrect API key provided: Bearer ***" in err  # the echo is shown, scrubbed
    assert SECRET not in out + err
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_the_taxonomys_api_base_does_not_get_the_command_lines_teacher_key(example, tmp_path, kdc, recorder,
                                                                           monkeypatch):
    url, seen = recorder
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    (example / "kdc.yaml").write_text(f"samples_per_node: 1\napi_base: {url}\n")
    code, _, err = kdc("compile", example, "--out", tmp_path / "out", "--teacher", "openai/gpt-4o-mini")
    assert seen == [] and code == 2 and "kdc.yaml:2:" in err and "--api-base" in err
    assert not (tmp_path / "out").exists()
    # the maintainer's own --api-base wins: the file's value is moot, no error
    with TeacherServer() as srv:
        code, _, err = kdc("compile", example, "--out", tmp_path / "out", "--teacher", "openai/teacher-test",
                           "--api-base", srv.url, "--dry-run", "--json")
    assert code == 0, err and seen == []


def test_the_taxonomys_out_cannot_choose_where_files_are_written(example, tmp_path, kdc):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "manifest.json").write_text("precious")
    (example / "kdc.yaml").write_text("samples_per_node: 1\nout: ../victim\n")
    with TeacherServer() as srv:
        code, _, err = kdc("compile", example, "--teacher", "openai/teacher-test", "--api-base", srv.url)
    assert code == 2 and "kdc.yaml:2:" in err and "--out" in err
    assert [p.name for p in victim.iterdir()] == ["manifest.json"] and (victim / "manifest.json").read_text() == "precious"


def test_a_config_the_maintainer_names_is_trusted_and_urls_are_redacted(example, tmp_path, kdc):
    own = tmp_path / "mine.yaml"
    own.write_text("samples_per_node: 1\ngates:\n  judge_api_base: http://user:pa55word@127.0.0.1:9/v1\n")
    with TeacherServer() as srv:
        code, _, err = kdc("compile", example, "--config", own, "--out", tmp_path / "out", "--teacher",
                           "openai/teacher-test", "--api-base", srv.url, "--no-judge")  # the endpoint is only recorded
    assert code == 0, err
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert "pa55word" not in manifest and "http://***@127.0.0.1:9/v1" in manifest


# --------------------------------------------------------------------------- 3. repos confined
def test_document_repos_outside_the_checkout_are_refused_in_validate_and_compile(tmp_path, kdc, monkeypatch):
    tax = checkout(tmp_path)
    secret = tmp_path / "home" / "secret"
    commit = doc_repo(secret)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    os.symlink(secret, tax.parent / "innocent")  # in the checkout, pointing out of it
    cases = {"absolute": str(secret), "home": "~/secret", "escape": "../../home/secret", "symlink": "../innocent",
             "file": secret.as_uri(), "ssh": "ssh://example.invalid/secret.git", "scp": "git@example.invalid:s.git",
             "git": "git://example.invalid/s.git", "http": "http://example.invalid/s.git",
             "missing": str(tmp_path / "home" / "nothing-here")}
    messages = {}
    for name, repo in cases.items():
        q = point_leaf(tax, repo, commit)
        code, out, _ = kdc("validate", "--format", "json", "--no-cache", "--fetch", "--root", tax, q)
        problems = [p for f in json.loads(out)["files"] for p in f["problems"]]
        assert code == 1 and [p["rule"] for p in problems] == ["document-repo-outside"], (name, problems)
        messages[name] = problems[0]["message"].replace(repo, "REPO")
        code, _, err = kdc("compile", tax, "--out", tmp_path / "out", "--teacher", "openai/t", "--api-base",
                           "http://127.0.0.1:9/v1", "--dry-run", "--fetch")
        assert code == 1 and f"{LEAF}/qna.yaml" in err and ("outside the taxonomy checkout" in err or
                                                            "only https:// URLs" in err), (name, err)
        assert "Launch" not in err and not (tmp_path / "out").exists()
    # without --fetch a URL of a refused scheme is neither read nor contacted: unchecked (the reference's verdict)
    q = point_leaf(tax, cases["scp"], commit)
    code, out, _ = kdc("validate", "--format", "json", "--no-cache", "--root", tax, q)
    assert code == 0 and json.loads(out)["summary"]["documents_unchecked"] == 1
    # the same words whether the path exists or not
    assert messages["absolute"] == messages["missing"] == messages["home"] == messages["symlink"]
    # the maintainer may allow a folder explicitly
    q = point_leaf(tax, str(secret), commit)
    code, out, _ = kdc("validate", "--format", "json", "--no-cache", "--root", tax, "--allow-repo",
                       str(tmp_path / "home"), q)
    assert code == 0 and not [p for f in json.loads(out)["files"] for p in f["problems"]]


# --------------------------------------------------------------------------- 5. compile --fetch
def test_compile_fetch_clones_allowed_remotes_only_when_asked(tmp_path, kdc, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tax = checkout(tmp_path)
    upstream = tmp_path / "upstream"
    commit = doc_repo(upstream, "# Sun\n\nThe Sun is a star.\n")
    point_leaf(tax, upstream.as_uri(), commit)
    args = ["compile", tax, "--out", tmp_path / "out", "--teacher", "openai/t", "--api-base",
            "http://127.0.0.1:9/v1", "--dry-run", "--json", "--allow-repo", tmp_path.as_uri()]
    code, _, err = kdc(*args)
    assert code == 1 and "fetching is off" in err and "--fetch" in err
    code, out, err = kdc(*args, "--fetch")
    assert code == 0, err
    assert json.loads(out)["nodes"][LEAF]["chunks"] == 1


# --------------------------------------------------------------------------- 4. errors scrubbed
def test_an_eval_judge_401_echoing_the_key_does_not_print_it(recorder, monkeypatch):
    from compiler.errors import TeacherError
    from compiler.train.evaluate import EvalItem, Judge, judge_pair

    url, seen = recorder
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    item = EvalItem(node_id="n", question="q?", answer="a", context=None, seed_index=0)
    with pytest.raises(TeacherError) as exc:
        judge_pair(Judge("openai/judge", api_base=url, retries=0), item, "x", "y")
    assert seen and set(seen) == {f"Bearer {SECRET}"}  # the server did get (and echo) the key (both orders)...
    assert "401" in str(exc.value) or "AuthenticationError" in str(exc.value)
    assert SECRET not in str(exc.value) + (exc.value.hint or "")  # ...the error does not show it
