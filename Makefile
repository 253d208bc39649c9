# Thin wrapper over CMake for the README's two commands.
#   make run   installs the Debian packages, builds a release, and generates text with mambac's own model
#   make test  installs the Debian packages, builds with ASan+UBSan, and runs the whole test suite
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PROMPT ?= It is a truth universally acknowledged

.PHONY: all setup build run test clean

all: build

setup:
	./scripts/setup

build: setup
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
	cmake --build build -j $(JOBS)

run: build
	build/mambac generate -p "$(PROMPT)" -n 60 --temperature 0.8 --top-p 0.95 --seed 1

test: setup
	cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DMAMBAC_SANITIZE=ON -DBUILD_TESTING=ON >/dev/null
	cmake --build build-test -j $(JOBS)
	cd build-test && ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf build build-test
