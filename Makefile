# kmcld: the two commands of README.md, plus helpers.
#   make run   installs what is missing, builds, and starts kmcld
#   make test  installs what is missing, builds and runs every test
.PHONY: setup build run test test-asan test-ubsan test-tsan bench fuzz-long clean

setup:
	@bash tools/setup.sh

build: setup
	bazel build //...

run: setup
	@bash tools/run_demo.sh

test: setup
	@bash tools/run_tests.sh

test-asan: setup
	@bash tools/run_tests.sh asan

test-ubsan: setup
	@bash tools/run_tests.sh ubsan

test-tsan: setup
	@bash tools/run_tests.sh tsan

bench: setup
	bazel run -c opt //bench:ring_bench
	bazel run -c opt //bench:kmcld_bench

clean:
	bazel clean
