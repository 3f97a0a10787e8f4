#!/bin/sh
# Runs every fuzz target (or the ones named) for a bounded time each.
#
#   fuzz/run.sh                 # all targets, 60 s each
#   SECONDS_PER_TARGET=600 fuzz/run.sh mutate diff
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; without nightly it
# falls back to the stable toolchain with RUSTC_BOOTSTRAP=1. Crashes land in
# fuzz/artifacts/<target>/; copy each (after fixing it) to tests/data/crashers/<target>/,
# where `cargo test --test properties` replays them.
set -eu
cd "$(dirname "$0")"
secs=${SECONDS_PER_TARGET:-60}
targets=${*:-"review_decode fieldsv1_decode path_parse diff mutate"}
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz() { cargo +nightly fuzz "$@"; }
else
    fuzz() { RUSTC_BOOTSTRAP=1 cargo +stable fuzz "$@"; }
fi
# The fuzz workspace has its own target directory (instrumented builds).
unset CARGO_TARGET_DIR
[ -d corpus ] || ./seed-corpus.sh
status=0
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: ${secs}s"
    # -max_len: reviews are large; 256 KiB lets the fixtures mutate whole.
    if ! fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$secs" -dict=hallmark.dict -max_len=262144 -timeout=10 \
        -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="artifacts/$t/"; then
        echo "!! $t found a crash: see fuzz/artifacts/$t/"
        status=1
    fi
done
exit $status
