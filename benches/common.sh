# Helpers shared by the bench scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The JSON file $1 as a TOML inline value (a client's JWK Set in a [[clients]] entry).
toml_of() { python3 -c '
import json, sys
def t(v):
    if isinstance(v, dict): return "{ " + ", ".join(json.dumps(k) + " = " + t(x) for k, x in v.items()) + " }"
    if isinstance(v, list): return "[" + ", ".join(t(x) for x in v) + "]"
    return json.dumps(v)
print(t(json.load(open(sys.argv[1]))))' "$1"; }

# The argon2id PHC hash of password $1 with OWASP 2024 parameters (m = 19 MiB, t = 2,
# p = 1), made by the npm `argon2` package of benches/oidc-provider, so that heartgate
# and the peer verify the same hash.
password_hash() { (cd benches/oidc-provider && node -e "
  require('argon2').hash(process.argv[1], {type: 2, memoryCost: 19456, timeCost: 2, parallelism: 1})
    .then((h) => console.log(h))" "$1"); }
