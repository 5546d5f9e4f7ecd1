# The book's two commands: `make book` and `make test`. Everything else supports them.
PYTHON   ?= python3
PROFILE  ?= book
VENV     := .venv
PY       := $(VENV)/bin/python
BOOK_STAMP := $(VENV)/.book-installed
DEV_STAMP  := $(VENV)/.dev-installed

.PHONY: book test chapter list data notebooks check-html lock clean help

help:
	@echo "make book [PROFILE=smoke|book|full]    execute every chapter and render _build/html"
	@echo "make test                              unit tests, smoke chapters, nbval, book build"
	@echo "make chapter NAME=<stem> [PROFILE=..] [PARAMS=\"k=v ...\"]  re-run one chapter into runs/"
	@echo "make list                              chapters and their parameters"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(BOOK_STAMP): requirements/book.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -r requirements/book.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(DEV_STAMP): requirements/dev.txt $(BOOK_STAMP)
	$(PY) -m pip install --quiet -r requirements/dev.txt
	touch $@

# The CNNs are trained first, several at a time on a CPU; the chapters then load them.
book: $(BOOK_STAMP)
	$(PY) -m lib train --profile $(PROFILE)
	$(PY) -m lib build --profile $(PROFILE)

chapter: $(BOOK_STAMP)
	@test -n "$(NAME)" || { echo "usage: make chapter NAME=<chapter stem> [PROFILE=..] [PARAMS=\"k=v ...\"]"; $(PY) -m lib list | grep -v '^ '; exit 2; }
	@set -f; $(PY) -m lib run $(NAME) --profile $(PROFILE) $(PARAMS)

list: $(BOOK_STAMP)
	@$(PY) -m lib list

test: $(DEV_STAMP)
	scripts/ensure_chromium.sh
	$(PY) -m pytest tests

# The browser test alone (it renders the smoke book first if needed).
check-html: $(DEV_STAMP)
	scripts/ensure_chromium.sh
	$(PY) -m pytest tests/test_browser.py

# Colab/Binder copies of the chapters (.ipynb without outputs), generated from the .md sources.
notebooks: $(BOOK_STAMP)
	$(PY) -m lib notebooks

data: $(BOOK_STAMP)
	$(PY) scripts/make_data.py --check

lock: $(DEV_STAMP)
	@echo "re-pin with: $(PY) -m pip freeze, then split into requirements/book.txt and dev.txt"

clean:
	rm -rf _build runs
