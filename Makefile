# carelake — the two commands a newcomer needs: `make demo` and `make test`.
# Everything else is a thin wrapper over the `carelake` CLI (see README.md).
SHELL := /bin/bash
CARELAKE := .venv/bin/carelake
PYTEST := .venv/bin/pytest

.PHONY: help setup demo test test-unit test-integration stack-up stack-down status topics up down bench clean

help:
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/' | sort

setup: ## Install Python deps (uv.lock), system packages and Kafka's jars (idempotent)
	@deploy/local/setup.sh

PATIENTS ?= 5000
demo: setup ## Set up, start the stack, stream a simulated day through every layer to Gold (PATIENTS=45000: the reference day)
	@$(CARELAKE) demo --patients $(PATIENTS)

test: setup ## Set up and run the whole suite against the real local stack
	@$(PYTEST)

test-unit: setup ## Only the tests that need no services
	@$(PYTEST) -m "not integration"

test-integration: setup ## Only the tests that use the real stack
	@$(PYTEST) -m integration

stack-up: setup ## Start Kafka, PostgreSQL, Redis, the Gold front and the Bronze dir
	@$(CARELAKE) stack up

stack-down: ## Stop the local stack (data is kept until `make clean`)
	@if [ -x $(CARELAKE) ]; then $(CARELAKE) stack down; fi

status: ## What runs where
	@$(CARELAKE) stack status

topics: ## Create the catalog's topics and register their contracts
	@$(CARELAKE) topics create

up: setup ## Stack + topics + every built service in the background
	@$(CARELAKE) up

down: ## Stop services and the stack
	@if [ -x $(CARELAKE) ]; then $(CARELAKE) down; fi

bench: setup ## Runtime throughput benchmark (figures go in bench/README.md)
	@.venv/bin/python bench/runtime_relay.py

clean: stack-down ## Remove all local state (.local/: stack data, logs, caches)
	rm -rf .local
