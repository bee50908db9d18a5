#!/usr/bin/env bash
# `cargo deny check licenses bans sources` with the root deny.toml (issue #9, "Reporting").
# Installs cargo-deny when it is missing. The advisories check is not run: the RustSec
# database cannot be fetched on these machines (THREATS.md appendix lists the advisories
# that matter; they are pinned past or regression-tested).
#   tests/deny.sh            install if needed, then check
#   tests/deny.sh install    install only (tests/run-all runs this in the background
#                            while the other suites run: the build takes minutes)
set -euo pipefail
cd "$(dirname "$0")/.."

# The version deny.toml is written for; cargo-deny's config format changes between minors.
DENY_VERSION=0.20.2

if ! command -v cargo-deny >/dev/null 2>&1 ||
  [ "$(cargo-deny --version | awk '{print $2}')" != "$DENY_VERSION" ]; then
  echo "installing cargo-deny $DENY_VERSION (a release build from source: several minutes)"
  start=$(date +%s)
  # Its own target directory, so that it never waits on the workspace's build lock.
  CARGO_TARGET_DIR=target/cargo-deny-build \
    cargo install cargo-deny --version "$DENY_VERSION" --locked
  echo "cargo-deny installed in $(($(date +%s) - start)) s"
fi
[ "${1:-}" = install ] && exit 0

cargo deny --locked check licenses bans sources
