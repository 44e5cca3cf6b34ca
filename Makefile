# The two commands the README promises: `make demo` and `make test`.
# Both create the virtual environment and install what they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
KDC     = $(VENV)/bin/kdc
OUT    ?= build/demo
export HF_HUB_OFFLINE = 1
export HF_HUB_DISABLE_TELEMETRY = 1
export LITELLM_LOCAL_MODEL_COST_MAP = True
export CMAKE_BUILD_PARALLEL_LEVEL = 2

.PHONY: demo test test-fast venv doc-repos browser bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: this takes the CPU wheel (an unpinned torch pulls a multi-GB CUDA build).
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $@

venv: $(VENV)/.installed

# Knowledge leaves name documents by git repo + commit; the repos are built, deterministically,
# from the markdown folders in documents/ (see scripts/make_doc_repos.py).
doc-repos: venv
	$(PY) scripts/make_doc_repos.py documents build/doc-repos

demo: venv doc-repos
	$(KDC) validate taxonomy
	$(KDC) compile taxonomy --out $(OUT)

# The report test drives Debian's headless Chromium; install it when it is missing (needs root/apt).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: venv doc-repos browser
	KDC_REQUIRE_CHROMIUM=1 $(PY) -m pytest

test-fast: venv doc-repos
	$(PY) -m pytest -m 'not slow'

bench: venv doc-repos
	$(PY) benchmarks/bench_validate.py
	$(PY) benchmarks/bench_gates.py
	$(PY) benchmarks/bench_compile.py

clean:
	rm -rf build $(VENV)
