#!/usr/bin/env bash
# Kotlin and Swift bindings (bindings/uniffi): builds the cdylib, generates the bindings in
# library mode, compiles the Kotlin bindings and their JUnit 5 tests and runs them on the
# JVM (one of them against a real heartgate server started here on 127.0.0.1 and stopped
# at the end), then checks the Swift side's C header compiles and matches the library's
# exported symbols. Installs what is missing: Debian's libjna-java, junit5 and clang, and
# the npm package kotlin-compiler (into target/kotlin).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=target/mobile
KOTLIN_VERSION=2.1.21

need_apt=()
[ -f /usr/share/java/jna.jar ] || need_apt+=(libjna-java)
[ -f /usr/share/java/junit-platform-console-standalone.jar ] || need_apt+=(junit5)
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
if ((${#need_apt[@]})); then
  echo "== installing ${need_apt[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi
kotlin_home=target/kotlin/node_modules/kotlin-compiler
if [ ! -x "$kotlin_home/bin/kotlinc" ] || ! grep -q "\"version\": \"$KOTLIN_VERSION\"" "$kotlin_home/package.json"; then
  echo "== installing kotlin-compiler@$KOTLIN_VERSION (npm) into target/kotlin"
  mkdir -p target/kotlin
  npm install --no-audit --no-fund --prefix target/kotlin "kotlin-compiler@$KOTLIN_VERSION" >/dev/null
fi
JNA=/usr/share/java/jna.jar
JUNIT=/usr/share/java/junit-platform-console-standalone.jar
STDLIB=$kotlin_home/lib/kotlin-stdlib.jar

echo "== building heartgate-ffi (cdylib) and the test server"
cargo build --locked -q -p heartgate-ffi
cargo build --locked -q -p heartgate-e2e --bin mobile-test-server
lib=target/debug/libheartgate_ffi.so

echo "== generating Kotlin and Swift bindings (library mode)"
rm -rf "$out"
mkdir -p "$out"
bindgen=(target/debug/uniffi-bindgen generate --library "$lib" --no-format)
"${bindgen[@]}" --language kotlin --out-dir "$out/kotlin"
"${bindgen[@]}" --language swift --out-dir "$out/swift"

echo "== compiling the Kotlin bindings and tests (kotlinc $KOTLIN_VERSION)"
mapfile -t sources < <(find "$out/kotlin" bindings/uniffi/tests/kotlin -name '*.kt' | sort)
"$kotlin_home/bin/kotlinc" -nowarn -jvm-target 17 -cp "$JNA:$JUNIT" -d "$out/classes" "${sources[@]}"

echo "== starting a heartgate server for the Kotlin flow test"
props="$out/server.properties"
mkfifo "$out/server.stdin"
target/debug/mobile-test-server "$root/$props" <"$out/server.stdin" &
server_pid=$!
exec 9>"$out/server.stdin" # the server stops when this closes (or after 10 minutes)
stop_server() {
  exec 9>&- || true
  wait "$server_pid" 2>/dev/null || true
}
trap stop_server EXIT
for _ in $(seq 1 300); do
  [ -f "$props" ] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "mobile-test-server died" >&2; exit 1; }
  sleep 0.2
done
[ -f "$props" ] || { echo "mobile-test-server did not start" >&2; exit 1; }

echo "== JUnit 5 on the JVM"
java -Djna.library.path="$root/target/debug" -Dheartgate.server.props="$root/$props" \
  -jar "$JUNIT" --disable-banner --disable-ansi-colors --details=tree --fail-if-no-tests \
  --class-path "$out/classes:$JNA:$STDLIB" --select-package health.heartgate.tests \
  | tee "$out/junit.txt"
stop_server
trap - EXIT
passed=$(sed -n 's/.*\[ *\([0-9]*\) tests successful *\].*/\1/p' "$out/junit.txt")
failed=$(sed -n 's/.*\[ *\([0-9]*\) tests failed *\].*/\1/p' "$out/junit.txt")
echo "kotlin: ${passed:-0} passed, ${failed:-0} failed"

echo "== Swift: C header compiles and matches the library's exported symbols"
header="$out/swift/HeartgateFFI.h"
printf '#include "HeartgateFFI.h"\nint main(void) { return 0; }\n' >"$out/swift/check.c"
clang -std=c11 -Wall -Wextra -Werror -I"$out/swift" -o "$out/swift/check" "$out/swift/check.c"
grep -q 'header "HeartgateFFI.h"' "$out/swift/HeartgateFFI.modulemap"
grep -oE '\b(uniffi|ffi)_heartgate_ffi_[A-Za-z0-9_]+\b' "$header" | sort -u >"$out/header-symbols.txt"
nm -D --defined-only "$lib" | awk '{print $3}' | grep -E '^(uniffi|ffi)_heartgate_ffi_' | sort -u >"$out/lib-symbols.txt"
missing=$(comm -23 "$out/header-symbols.txt" "$out/lib-symbols.txt")
extra=$(comm -13 "$out/header-symbols.txt" "$out/lib-symbols.txt")
if [ -n "$missing" ] || [ -n "$extra" ]; then
  echo "header and library disagree:" >&2
  echo "  declared but not exported: ${missing:-none}" >&2
  echo "  exported but not declared: ${extra:-none}" >&2
  exit 1
fi
echo "swift: header compiles; $(wc -l <"$out/header-symbols.txt") declared symbols, all exported by $lib"

# The Swift package and its XCTest tests need the generated sources next to them.
swift_pkg=bindings/uniffi/swift
mkdir -p "$swift_pkg/Sources/Heartgate" "$swift_pkg/Sources/HeartgateFFI/include"
cp "$out/swift/Heartgate.swift" "$swift_pkg/Sources/Heartgate/"
cp "$header" "$swift_pkg/Sources/HeartgateFFI/include/"
cp "$out/swift/HeartgateFFI.modulemap" "$swift_pkg/Sources/HeartgateFFI/include/module.modulemap"
if command -v swift >/dev/null 2>&1; then
  (cd "$swift_pkg" && swift test -Xlinker -L"$root/target/debug")
else
  echo "swift: no Swift toolchain on this machine; the XCTest tests in $swift_pkg run where one exists (swift test)"
fi
