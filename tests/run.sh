#!/usr/bin/env bash
# The test command: installs what the build and the tests need (Debian 12),
# builds a plain and an AddressSanitizer/UndefinedBehaviorSanitizer tree and
# runs every test in both. Mount tests need root and /dev/fuse; without them
# they report SKIP (exit 77), never a silent pass.
#   tests/run.sh            everything
#   tests/run.sh --quick    the plain build only
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake g++ pkg-config libfuse3-dev fuse3 libcli11-dev libspdlog-dev libfmt-dev liburing-dev libgtest-dev
          python3 python3-prometheus-client strace gdb attr acl util-linux e2fsprogs procps
          mandoc groff bash-completion zsh fish
          debhelper dpkg-dev fakeroot lintian rpm clang clang-tidy)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

jobs=$(nproc)
# Every setting a test tree depends on is given on each configure: a build
# tree made earlier (the README's first command configures build/ without
# tests) keeps its cache, and a cached SPLICEFS_BUILD_TESTS=OFF would
# otherwise leave nothing to run. Debian's python3 (not a python3 earlier
# in PATH) has the test modules apt installed.
common=(-DSPLICEFS_BUILD_TESTS=ON -DSPLICEFS_FUZZ=OFF -DPython3_EXECUTABLE=/usr/bin/python3)
# A ctest run that finds no test is a failure, never a pass.
run_ctest() { ctest --no-tests=error --output-on-failure "$@"; }

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPLICEFS_SANITIZE= \
      -DSPLICEFS_TEST_SPLICE_MODES="off;read;all" -DSPLICEFS_TEST_CACHE_POLICIES="auto;always;never" \
      -DSPLICEFS_TEST_PASSTHROUGH=ON -DSPLICEFS_TEST_IO_URING=ON \
      -DSPLICEFS_TEST_IO_URING_TESTS="test_parity;test_random_ops;test_load;test_permissions;test_posix_edges;test_acl" \
      -DSPLICEFS_TEST_LOAD_SECONDS=60 "${common[@]}"
cmake --build build -j"$jobs"
run_ctest --test-dir build

[ "${1:-}" = "--quick" ] && exit 0

# AddressSanitizer + UndefinedBehaviorSanitizer: every test but the system ones
# (the load test for 20 s: the 60 s run is the plain build's).
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSPLICEFS_SANITIZE=address,undefined \
      -DSPLICEFS_TEST_SPLICE_MODES=all -DSPLICEFS_TEST_CACHE_POLICIES="auto;always;never" \
      -DSPLICEFS_TEST_PASSTHROUGH=ON -DSPLICEFS_TEST_IO_URING=ON \
      -DSPLICEFS_TEST_IO_URING_TESTS="test_parity;test_random_ops;test_posix_edges" -DSPLICEFS_TEST_LOAD_SECONDS=20 "${common[@]}"
cmake --build build-asan -j"$jobs"
# The million-file memory test runs a tenth of its files here, and the
# RSS bounds allow for ASan's quarantine (up to 256 MiB of freed memory)
# and redzones.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    SPLICEFS_MEMORY_FILES=100000 SPLICEFS_RSS_SLACK_MIB=512 SPLICEFS_BYTES_PER_INODE=8192 \
    run_ctest --test-dir build-asan --label-exclude system

# ThreadSanitizer: every integration test, the load test for 30 s (the plain build runs it 60 s).
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DSPLICEFS_SANITIZE=thread \
      -DSPLICEFS_TEST_SPLICE_MODES=all -DSPLICEFS_TEST_CACHE_POLICIES="auto;always" \
      -DSPLICEFS_TEST_PASSTHROUGH=OFF -DSPLICEFS_TEST_IO_URING=ON \
      -DSPLICEFS_TEST_IO_URING_TESTS="test_parity;test_random_ops;test_load" -DSPLICEFS_TEST_LOAD_SECONDS=30 "${common[@]}"
cmake --build build-tsan -j"$jobs"
# tests/tsan.supp explains the one kind of report it suppresses.
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp" \
    SPLICEFS_MEMORY_FILES=100000 SPLICEFS_RSS_SLACK_MIB=512 SPLICEFS_BYTES_PER_INODE=8192 \
    run_ctest --test-dir build-tsan --label-regex integration

# libFuzzer on option and size parsing, for a bounded time.
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug -DSPLICEFS_FUZZ=ON \
      -DSPLICEFS_SANITIZE=address,undefined -DSPLICEFS_BUILD_TESTS=OFF
cmake --build build-fuzz -j"$jobs" --target options_fuzz
mkdir -p build-fuzz/corpus
build-fuzz/options_fuzz -max_total_time=30 -timeout=5 build-fuzz/corpus tests/fuzz/corpus

# clang-tidy with the checked-in configuration.
find src -name '*.cpp' -print0 | xargs -0 -n 4 -P "$jobs" clang-tidy -p build --quiet
