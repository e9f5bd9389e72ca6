# cda_lite: build the book, run the tests, open the chapters in JupyterLab.
#
#   make book              execute every chapter and build the HTML book (book/_build/html/)
#   make book PROFILE=full the same with the longer "full" profile
#   make test              import-linter layers, unit tests + every chapter as a test (profile fast)
#   make student           student edition: executed, solutions removed, starter cells; notebooks + HTML
#   make assignments       nbgrader course (source + release) from the chapters: build/assignments/
#   make test-site         build the book, then check every page in headless Chromium (build/site-check/)
#   make mutation          mutation testing of the core (mutmut; slow, not in CI): benchmarks/README.md
#   make lab               JupyterLab, with the .md chapters opening as notebooks
#   make clean             remove build outputs (make distclean also removes .venv)
#
# Needs only python3 (3.11) and pip; everything else goes into .venv.

SHELL   := /bin/bash
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.stamp
PROFILE ?= fast
# CPU wheel of torch, installed before anything else so no CUDA build is ever pulled in.
TORCH   := torch==2.13.0
EXTRAS  := book,test,lab,sd
# pytest-xdist workers (each chapter is one test, so a chapter runs on one worker).
JOBS    ?= 2
# Threads per test worker (and per notebook kernel it starts): JOBS workers share the cores, and two
# workers with two torch threads each slow the small networks down many times over.
TEST_THREADS ?= 1
# Extra arguments for pytest (e.g. make test PYTEST_ARGS="-k gmm -x").
PYTEST_ARGS ?=
LAB_ARGS ?=
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json

# Kernels, kernelspecs and JupyterLab settings come from .venv before ~/.local.
export JUPYTER_PREFER_ENV_PATH := 1

CHAPTERS := $(wildcard book/*.md)

.PHONY: venv book student assignments test test-site lab clean distclean help mutation

help:
	@sed -n '2,13p' Makefile | sed 's/^# \{0,1\}//'

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then $(PYTHON) -m venv $(VENV); fi
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[$(EXTRAS)]" "$(TORCH)"
	@# JupyterLab: open markdown (MyST) files with the Jupytext Notebook viewer by default.
	@mkdir -p $(dir $(LAB_SETTINGS))
	@printf '%s\n' \
	  '{' \
	  '  "@jupyterlab/docmanager-extension:plugin": {' \
	  '    "defaultViewers": {' \
	  '      "markdown": "Jupytext Notebook",' \
	  '      "myst": "Jupytext Notebook"' \
	  '    }' \
	  '  }' \
	  '}' > $(LAB_SETTINGS)
	touch $(STAMP)

# Chapters run through MyST-NB's jupyter-cache (build/jupyter_cache_<profile>): outputs that
# `make test` stored (tests/test_chapters.py) are rendered, not executed again. The cache is dropped
# first when the library, the data or the book's configuration changed after it was written.
JCACHE := build/jupyter_cache_$(PROFILE)
book: $(STAMP)
	@if [ -f $(JCACHE)/global.db ] && [ -n "$$(find cda_lite data book/_config.yml book/_ext \
	  -newer $(JCACHE)/global.db -print -quit)" ]; then echo "library changed: clearing $(JCACHE)"; rm -rf $(JCACHE); fi
	CDA_PROFILE=$(PROFILE) $(BIN)/jupyter-book build book -W --keep-going
	@echo "Open book/_build/html/index.html"

# Student edition: a copy of book/ with a starter code cell under every exercise and every
# {solution-start}..{solution-end} and {solution} block removed (tools/strip_solutions.py), in
# build/student/book/; built and executed (outputs of everything but the solutions) through its own
# jupyter-cache, build/student/build/jupyter_cache_<profile>, so a second `make student` reuses it.
# The executed chapters, with outputs, are the notebooks to hand out: build/student/notebooks/.
# `make student STUDENT_EXECUTE=off` skips execution (code without outputs, in seconds).
STUDENT         := build/student
STUDENT_EXECUTE ?= cache
student: $(STAMP)
	@c=$(STUDENT)/build/jupyter_cache_$(PROFILE); if [ -f $$c/global.db ] && [ -n "$$(find cda_lite data book \
	  -newer $$c/global.db -print -quit)" ]; then echo "book changed: clearing $$c"; rm -rf $$c; fi
	$(BIN)/python tools/strip_solutions.py book $(STUDENT)/book --execute $(STUDENT_EXECUTE)
	CDA_PROFILE=$(PROFILE) $(BIN)/jupyter-book build $(STUDENT)/book -W --keep-going
	@rm -rf $(STUDENT)/notebooks && mkdir -p $(STUDENT)/notebooks
	@cp $(STUDENT)/book/_build/jupyter_execute/[0-9][0-9]_*.ipynb $(STUDENT)/notebooks/
	@echo "Hand out $(STUDENT)/notebooks/; open $(STUDENT)/book/_build/html/index.html"

# nbgrader course folder (tools/make_assignments.py): build/assignments/source/chNN/chNN.ipynb with
# solution regions as ### BEGIN/END SOLUTION and one autograded cell per exercise check
# (cda_lite.exercises.check, points = ★), then `nbgrader generate_assignment` into release/.
# ASSIGNMENTS="03 07" limits it to some chapters. Grade in build/assignments with nbgrader's commands.
COURSE      := build/assignments
ASSIGNMENTS ?=
assignments: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python tools/make_assignments.py book $(COURSE) \
	  $(if $(ASSIGNMENTS),--chapters $(ASSIGNMENTS))

# The unit tests and every chapter (tests/test_chapters.py: each MyST chapter run top to bottom,
# as nbval --nbval-lax did) in one pytest command; the executed chapters go into the jupyter-cache
# that `make book` renders from, so CI runs each chapter once (worksteal: the long chapters spread).
# First the layers of the library (import-linter contracts in pyproject.toml; a broken contract fails).
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	@rc=0; OMP_NUM_THREADS=$(TEST_THREADS) CDA_PROFILE=fast CDA_CHAPTER_CACHE=$(abspath build/jupyter_cache_fast) \
	  $(BIN)/python -m pytest -n $(JOBS) --dist worksteal $(PYTEST_ARGS) tests || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected (treated as success)"; rc=0; fi; \
	exit $$rc

# The rendered site in a real browser (tools/site_check.py): after `make book`, every page of
# book/_build/html is opened in the system's headless Chromium (chromium + chromium-driver are
# apt-get installed when missing; nothing is downloaded from the web) and must load without console
# errors, make no off-host request, show MathJax-typeset maths, load every image and resolve every
# internal link; notebook pages must offer their .ipynb. Screenshots and report.{txt,json} go to
# build/site-check/; the target fails on any problem.
SITE_CHECK := build/site-check
# Then Chapter 3 opened in JupyterLab in the same browser (tools/lab_check.py): jupyterlab-myst must
# render its directives and roles (no raw MyST visible).
test-site: book
	$(BIN)/python tools/site_check.py book/_build/html --screenshots $(SITE_CHECK) --install-browser
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python tools/lab_check.py book/03_constrained_alignment.md

# Mutation testing of the core (not part of `make test`: it takes tens of minutes on 2 cores).
# mutmut 3, configured in setup.cfg [mutmut]: which modules are mutated, which test files judge them.
# MUTANTS narrows the run to mutant names (globs, e.g. MUTANTS='cda_lite.constraints.*'); the
# score and the surviving mutants are printed by `mutmut results` and recorded in benchmarks/README.md.
MUTANTS ?=
MUTATION_JOBS ?= 1
mutation: $(STAMP)
	rm -rf mutants
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS)
	$(BIN)/mutmut results --all true | $(BIN)/python tools/mutation_score.py

lab: $(STAMP)
	CDA_PROFILE=$(PROFILE) $(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean:
	rm -rf book/_build build .pytest_cache mutants
	find . -path ./$(VENV) -prune -o -type d \( -name __pycache__ -o -name .ipynb_checkpoints \) -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) *.egg-info
