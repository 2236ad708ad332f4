# Every target creates .venv and installs the project into it first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean system-deps bench-deps

# $(call apt_install,COMMANDS,PACKAGE,WHY): install a Debian package (as root) when none of COMMANDS exists.
define apt_install
	@$(foreach c,$(1),command -v $(c) >/dev/null 2>&1 ||) { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(2) (Debian) $(3)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else echo "$(firstword $(1)) is missing: install Debian's $(2) $(3)"; fi; }
endef

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamfit demo $(ARGS)

# The status-page test drives Debian's headless Chromium; install it when it is missing (as root).
system-deps:
	$(call apt_install,chromium chromium-browser,chromium,for the status-page test)

# The serving bench's load generator is wrk (Debian's package), run in its own process.
bench-deps:
	$(call apt_install,wrk,wrk,for streamfit bench serve)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP) bench-deps
	$(BIN)/streamfit bench ingest --lookup-rps 500
	$(BIN)/streamfit bench serve --port 0
	$(BIN)/streamfit bench quality

clean:
	rm -rf $(VENV) .streamfit
