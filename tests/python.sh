#!/usr/bin/env bash
# The Python package's tests (issue #7): build the abi3 wheel of bindings/python, install
# it into target/py-venv, check that it also installs and works in a fresh virtualenv
# with no compiler involved, run pytest (PyJWT / joserfc interop, Validator over a real
# socket and against the real `heartgate` server, FastAPI), mypy.stubtest and
# mypy --strict. Called by tests/run-all.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV=target/py-venv
WHEELS=target/py-wheels
start=$SECONDS

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
fi
echo "== installing the Python test tools"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  'maturin>=1.7,<2' 'pytest>=8' 'pytest-asyncio>=0.23' 'httpx>=0.24' 'fastapi>=0.100' \
  'PyJWT[crypto]>=2.8' 'joserfc>=1.0' 'cryptography>=42' 'mypy>=1.10'

# maturin (the build backend, without build isolation) must be on PATH.
export PATH="$PWD/$VENV/bin:$PATH"
echo "== building the abi3 wheel (maturin, release)"
rm -rf "$WHEELS"
"$VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
  -w "$WHEELS" ./bindings/python
wheel=$(ls "$WHEELS"/heartgate-*-abi3-*.whl)
echo "   $(basename "$wheel")"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"

echo "== the wheel in a fresh virtualenv (pure-Python dependencies only, nothing compiled)"
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
"$PY" -m venv "$fresh/venv"
"$fresh/venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: "$wheel"
"$fresh/venv/bin/python" - <<'PYEOF'
import time
import heartgate
k = heartgate.SigningKey.generate("EdDSA")
token = heartgate.encode({"sub": "a", "exp": int(time.time()) + 60}, k)
assert heartgate.decode(token, k.public_key(), algorithms=["EdDSA"])["sub"] == "a"
print("   fresh virtualenv: import, sign and verify OK")
PYEOF

echo "== building the heartgate server binary (for the Validator-against-the-real-server test)"
cargo build --locked -q --bin heartgate
# Not HEARTGATE_*: the server reads those as configuration.
export HG_SERVER_BIN="$PWD/target/debug/heartgate"

echo "== pytest bindings/python/tests"
(cd bindings/python && "../../$VENV/bin/python" -m pytest -q -p no:cacheprovider -rs tests) | tee target/py-pytest.log
echo "== mypy.stubtest heartgate"
# Run outside the source tree so that the installed package is what gets checked.
(cd "$fresh" && "$OLDPWD/$VENV/bin/python" -m mypy.stubtest heartgate)
echo "== mypy --strict (package, examples, tests, benchmark)"
(cd bindings/python && "../../$VENV/bin/python" -m mypy --strict --cache-dir ../../target/py-mypy-cache python/heartgate examples tests benches)

echo "== benchmark smoke run (figures meaningless at this budget; see README for real ones)"
(cd bindings/python && "../../$VENV/bin/python" -W ignore benches/bench.py --seconds 0.01 | tail -n 1)

echo "== Python package: $(tail -n 1 target/py-pytest.log | sed 's/=//g' | xargs); stubtest OK; $((SECONDS - start)) s"
