# The two commands a new user needs (each sets everything up on first use):
#   make demo   - open napari with a sample image and the napari-unet widgets
#                 (with no display: runs segment -> compare -> export headless into out/demo)
#   make test   - run the test suite (napari tests run under Xvfb when there is no display)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@if [ -n "$$DISPLAY" ]; then $(VENV)/bin/napari-unet demo; \
	else echo "no display: running the demo headless into out/demo"; \
	  xvfb-run -a -s "-screen 0 1600x1000x24" $(VENV)/bin/napari-unet demo --headless out/demo --overwrite; fi

test: setup
	@$(VENV)/bin/ruff check napari_unet tests benchmarks training docs sample_data
	@$(VENV)/bin/ruff format --check napari_unet tests benchmarks training docs sample_data
	@$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check --fix napari_unet tests benchmarks training docs sample_data && $(VENV)/bin/ruff format napari_unet tests benchmarks training docs sample_data

bench: setup
	@$(PY) -m benchmarks.bench_inference

clean:
	rm -rf build dist *.egg-info out .pytest_cache
