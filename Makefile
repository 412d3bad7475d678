# Async Task Manager: `make run` starts everything on the embedded default; `make test` runs
# the suite. Both create the virtualenv (.venv) and install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT
# Local settings read by manage.py, the workers and beat (backend/settings.py). make run,
# make migrate and make superuser write it once, with DEBUG=true and a generated secret, if it
# does not exist; it is git-ignored and never overwritten. Empty: no file (the test suite).
ENV_FILE ?= .env
export ENV_FILE

.PHONY: install run test bench lint format migrate superuser clean help

help:
	@echo "make run        start web, the workers and beat on http://127.0.0.1:$(PORT) (Ctrl-C stops all)"
	@echo "make test       run the whole test suite (coverage report included)"
	@echo "make install    create the virtualenv (.venv) and install the requirements (the others do it first)"
	@echo "make bench      measure the production stack (PostgreSQL + Redis), then the embedded default (bench/RESULTS.md)"
	@echo "make migrate    write .env when missing and apply the migrations"
	@echo "make lint       ruff lint and format check"
	@echo "make format     ruff fix and format"
	@echo "make superuser  create an admin user (non-interactive with DJANGO_SUPERUSER_* set)"
	@echo "make clean      remove the virtualenv and run-time files (var/)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	@echo "Installing the dependencies into $(VENV) (about a minute the first time)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $@

install: $(VENV)/.installed

ifneq ($(ENV_FILE),)
# Not on a deployment, whose environment holds its settings (DJANGO_SECRET_KEY and
# ALLOWED_HOSTS): a .env with DEBUG=true would switch every later process to debug mode.
$(ENV_FILE): | $(BIN)/python
	@if [ -n "$$DJANGO_SECRET_KEY" ] && [ -n "$$ALLOWED_HOSTS" ]; then \
	  echo "Not writing $@: DJANGO_SECRET_KEY and ALLOWED_HOSTS are set in the environment, which holds the settings."; \
	else \
	  key=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))') && umask 077 && \
	  printf '%s\n' "# Local settings, written by make (git-ignored). Every variable: .env.example." \
	    "# A variable set in the environment wins over this file." \
	    "DEBUG=true" "DJANGO_SECRET_KEY=$$key" > $@.tmp && mv $@.tmp $@ && \
	  echo "Wrote $@ (DEBUG=true, a generated DJANGO_SECRET_KEY): manage.py reads it."; \
	fi
endif

# DEBUG for make's manage.py commands: the environment's; under `make run`, true (as its
# processes); else the .env's when it sets one; else true on a developer's machine (also
# with a .env holding only a key, as the README's Docker step writes) and left to its
# default (off) on a deployment, whose environment holds the settings (and no .env is
# read: it was not written).
# Whether the .env gives variable $(1) a value (not empty, not a comment).
env_file_sets = grep -Eqs '^[[:space:]]*(export[[:space:]]+)?$(1)=["'"'"']?[^"'"'"'[:space:]\#]' "$(ENV_FILE)"
WITH_DEBUG = env $$( [ -f "$(ENV_FILE)" ] || echo ENV_FILE= ) $$( [ -n "$$DEBUG" ] || \
	{ [ -z "$(filter run,$(MAKECMDGOALS))" ] && { $(call env_file_sets,DEBUG) || \
	{ [ -n "$$DJANGO_SECRET_KEY" ] && [ -n "$$ALLOWED_HOSTS" ]; }; }; } || echo DEBUG=true )

migrate: install $(ENV_FILE)
	@echo "manage.py migrate"
	@$(WITH_DEBUG) $(BIN)/python manage.py migrate --noinput

run: migrate
	@echo ""
	@echo "  Async Task Manager on http://127.0.0.1:$(PORT)"
	@echo "    API root    http://127.0.0.1:$(PORT)/api/"
	@echo "    Swagger UI  http://127.0.0.1:$(PORT)/api/docs/"
	@echo "    ReDoc       http://127.0.0.1:$(PORT)/api/redoc/"
	@echo "    Admin       http://127.0.0.1:$(PORT)/admin/"
	@echo "    Health      http://127.0.0.1:$(PORT)/health/"
	@echo "  Create an admin user (in another terminal): make superuser"
	@echo "  Processes: web, worker (short tasks), long (long-running tasks), maintenance (sweeps), beat."
	@echo "  Ctrl-C stops them all."
	@echo ""
	@# Links in mails and webhooks point at this port, unless PUBLIC_BASE_URL is given (here or in
	@# .env); PORT itself does not say where the service is reached (behind a proxy, say).
	@if [ -z "$${PUBLIC_BASE_URL:-}" ] && ! $(call env_file_sets,PUBLIC_BASE_URL); then \
		export PUBLIC_BASE_URL=http://127.0.0.1:$(PORT); fi; \
	[ -f "$(ENV_FILE)" ] || export ENV_FILE=; \
	DEBUG=$${DEBUG:-true} PYTHONUNBUFFERED=1 PATH="$(abspath $(BIN)):$$PATH" exec $(BIN)/python scripts/run.py start -e /dev/null -f Procfile -p $(PORT)

# Interactive; with DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_EMAIL and
# DJANGO_SUPERUSER_PASSWORD set (exported, or in the .env), non-interactive (scripts, containers).
superuser: migrate
	@$(WITH_DEBUG) $(BIN)/python manage.py createsuperuser $$( { [ -n "$${DJANGO_SUPERUSER_PASSWORD:-}" ] || \
		$(call env_file_sets,DJANGO_SUPERUSER_PASSWORD); } && echo --noinput )

# The suite runs in TEST_PROCESSES processes (pytest-xdist), each on stores of its own
# (backend/common/pytest_env.py); 0 runs it in make's own, as a debugger or a RabbitMQ broker
# (whose virtual host the processes would share) needs.
TEST_PROCESSES ?= $(if $(filter amqp%,$(CELERY_BROKER_URL)),0,2)
# COVERAGE=no leaves the coverage measure out: the suite takes about 40 % less CPU (CI
# measures it on one of its two full runs).
COVERAGE ?= yes
COVERAGE_ARGS = $(if $(filter no,$(COVERAGE)),,--cov --cov-report=term-missing:skip-covered $(if $(PYTEST_ARGS),,--cov-fail-under=90))

test: install
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) $(COVERAGE_ARGS) $(PYTEST_ARGS)

# The production stack first (bench/production.py: --quick from BENCH_ARGS, its own options in
# PRODUCTION_BENCH_ARGS), then the embedded default (bench/run.py: BENCH_ARGS), then the stats
# endpoint at 100,000 and 1,000,000 tasks (bench/stats.py: STATS_BENCH_ARGS).
bench: install
	$(BIN)/python bench/production.py $(filter --quick,$(BENCH_ARGS)) $(PRODUCTION_BENCH_ARGS)
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/stats.py $(STATS_BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .coverage htmlcov .pytest_cache .ruff_cache
