# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAMPLE := ChestXrayCounterfactual/Resources/SampleData/nih_chest_pa_cardiomegaly.dcm

.PHONY: demo test check clean-venv

$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m ChestXrayCounterfactualLib predict $(SAMPLE)
	$(BIN)/python -m ChestXrayCounterfactualLib explain $(SAMPLE) --out out --overwrite
	@echo "Demo outputs written to $(CURDIR)/out/ (open out/*/overview.png)"

# Both test targets lint first (rules in ruff.toml, Slicer's rule families; pre-commit runs the same check),
# then type-check the engine (mypy, configured in pyproject.toml).
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# The fast tier for everyday work: unit tests on toy models (seconds), no bundled weights.
check: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m fast

clean-venv:
	rm -rf $(VENV)
