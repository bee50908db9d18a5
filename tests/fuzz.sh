#!/usr/bin/env bash
# Fuzzing in CI (THREATS §4.1, issue #9): build the libFuzzer targets of fuzz/ on the stable
# toolchain, smoke-run each one briefly, then replay the committed corpus and regressions
# as ordinary tests (core's targets and the server's http_service).
#
# The targets are built with plain cargo and the instrumentation flags that cargo-fuzz
# 0.13 passes (sancov with inline 8-bit counters, pc-table, trace-compares, --cfg fuzzing),
# without AddressSanitizer (heartgate forbids unsafe code) and without installing
# cargo-fuzz: `cargo install cargo-fuzz` alone took about 4 minutes on these 2-core
# machines, the whole budget of this step. Long runs use cargo-fuzz itself, see the
# README's "Fuzzing" section.
#
# Environment: FUZZ_SMOKE_SECS (default 15) for the ★ set, FUZZ_QUICK_SECS (default 4)
# for the others; FUZZ_JOBS (default 2) targets run at once.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke_secs=${FUZZ_SMOKE_SECS:-15}
quick_secs=${FUZZ_QUICK_SECS:-4}
jobs=${FUZZ_JOBS:-2}
triple=$(rustc -vV | sed -n 's/^host: //p')

# ★ = the CI smoke set of THREATS §4.1.
star=(jws_compact jwt_verify jwk_jwks form_params authorize_request client_assertion)
rest=(jwt_claims token_request cbor_record client_cert_header x509_binding smart_scope
  redirect_uri_match wrapper_token opaque_token dcr_metadata ciba_request)
# http_service instruments the whole server (hyper, rustls, tokio, redb, redis): about
# six minutes of cold build on these machines, too much for this step's budget. CI
# replays its corpus (below); FUZZ_HTTP=1 builds and smoke-runs it too.
features=()
if [ "${FUZZ_HTTP:-0}" = 1 ]; then
  rest+=(http_service)
  features=(--features http)
fi

start=$(date +%s)
echo "-- building fuzz targets (RUSTC_BOOTSTRAP=1, sancov, profile ci)"
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
flags+=" -Cllvm-args=-sanitizer-coverage-stack-depth"
flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0"
flags+=" --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
RUSTC_BOOTSTRAP=1 RUSTFLAGS="$flags" cargo build --manifest-path fuzz/Cargo.toml \
  --locked --target "$triple" --profile ci --bins "${features[@]}"
bin=fuzz/target/$triple/ci
echo "   built in $(( $(date +%s) - start )) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0

# run TARGET SECONDS: fuzz from the committed seeds (read-only: new inputs go to $work).
run() {
  local t=$1 secs=$2
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  if "$bin/$t" -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=64 \
      -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/" \
      "$work/$t/corpus" "fuzz/corpus/$t" >"$work/$t/log" 2>&1; then
    echo "   $t: $(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log") runs in ${secs}s, ok"
  else
    echo "   $t: FAILED (log below; the crash input is kept in fuzz/artifacts/$t/ -- fix the"
    echo "   bug and commit the input under fuzz/regressions/$t/)"
    tail -n 40 "$work/$t/log"
    mkdir -p "fuzz/artifacts/$t"
    cp "$work/$t/artifacts/"* "fuzz/artifacts/$t/" 2>/dev/null || true
    ls -l "fuzz/artifacts/$t"
    return 1
  fi
}

# Run "target:seconds" pairs, $jobs at a time.
run_all() {
  local pids=() names=()
  for spec in "$@"; do
    run "${spec%%:*}" "${spec##*:}" &
    pids+=($!)
    if ((${#pids[@]} >= jobs)); then
      wait "${pids[0]}" || failed=1
      pids=("${pids[@]:1}")
    fi
  done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
}

echo "-- smoke run: ★ set ${smoke_secs}s each, the others ${quick_secs}s each, $jobs at a time"
specs=()
for t in "${star[@]}"; do specs+=("$t:$smoke_secs"); done
for t in "${rest[@]}"; do specs+=("$t:$quick_secs"); done
run_all "${specs[@]}"

if [ "${FUZZ_SKIP_REPLAY:-0}" = 1 ]; then
  echo "-- corpus replay skipped (FUZZ_SKIP_REPLAY=1: cargo test --workspace ran it)"
else
  echo "-- replaying fuzz/corpus and fuzz/regressions as tests"
  cargo test -p heartgate-core --features fuzzing --locked --test fuzz_corpus || failed=1
  # http_service's body lives in the server crate.
  cargo test -p heartgate-server --features fuzzing --locked --test fuzz_corpus || failed=1
fi

echo "   fuzz.sh took $(( $(date +%s) - start )) s"
exit "$failed"
