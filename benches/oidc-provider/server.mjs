// oidc-provider as heartgate's load-test peer: the same client (private_key_jwt, ES256),
// client_credentials with a JWT access token (ES256) for one audience, and opaque tokens
// for the introspection scenario, and a resource server `rs-mtls` that introspects with
// self_signed_tls_client_auth (RFC 8705 §2.2) as heartgate's does; `backend-mtls` gets
// certificate-bound JWTs by self_signed_tls_client_auth, and `web` pushes authorization
// requests (RFC 9126) with private_key_jwt, as the heartgate clients of the same names.
// The whole code flow (`flow` scenarios) goes through a sign-in page and a consent page
// served here (`/interaction/:uid`), as heartgate's: the users `alice0`…`alice63` with the argon2id
// hash given in the environment (HG_PEER_PASSWORD_HASH, the same PHC string heartgate is
// configured with, so both verify the same hash at the same cost), consent remembered as
// an oidc-provider Grant.
// Several nodes of one deployment (benches/cluster): HG_PEER_REDIS=redis://... stores every
// model in Redis (the adapter below), HG_PEER_ISSUER sets the common issuer, and
// HG_PEER_SECRETS=FILE holds the signing key and cookie key the nodes share (created by
// the first node that finds it missing). Usage:
//   node server.mjs PORT CERT.pem KEY.pem CLIENT_JWKS.json MTLS_JWKS.json
import fs from 'node:fs';
import https from 'node:https';
import crypto from 'node:crypto';
import argon2 from 'argon2';
import Redis from 'ioredis';
import Provider from 'oidc-provider';

const [port, certPath, keyPath, jwksPath, mtlsJwksPath] = process.argv.slice(2);
const USERS = new Set(Array.from({ length: 64 }, (_, n) => `alice${n}`));
const PASSWORD_HASH = process.env.HG_PEER_PASSWORD_HASH;
const issuer = process.env.HG_PEER_ISSUER ?? `https://127.0.0.1:${port}`;
const clientJwks = JSON.parse(fs.readFileSync(jwksPath, 'utf8'));
const mtlsJwks = JSON.parse(fs.readFileSync(mtlsJwksPath, 'utf8'));
function makeSecrets() {
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    signing: { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: 'peer-es256' },
    cookie: crypto.randomBytes(32).toString('base64url'),
  };
}
let secrets;
if (process.env.HG_PEER_SECRETS) {
  try {
    secrets = JSON.parse(fs.readFileSync(process.env.HG_PEER_SECRETS, 'utf8'));
  } catch {
    secrets = makeSecrets();
    fs.writeFileSync(process.env.HG_PEER_SECRETS, JSON.stringify(secrets), { mode: 0o600 });
  }
} else {
  secrets = makeSecrets();
}
const signing = secrets.signing;

// oidc-provider's adapter interface on Redis: each model a JSON string with its TTL,
// indexes by uid, user code and grant (for revocation by grant), and `consume` as a
// separate marker key with the model's remaining TTL.
const redis = process.env.HG_PEER_REDIS ? new Redis(process.env.HG_PEER_REDIS) : null;
redis?.defineCommand('consumeModel', {
  numberOfKeys: 2,
  lua: `local t = redis.call('PTTL', KEYS[1])
if t > 0 then redis.call('SET', KEYS[2], ARGV[1], 'PX', t)
elseif t == -1 then redis.call('SET', KEYS[2], ARGV[1]) end
return t`,
});
class RedisAdapter {
  constructor(name) { this.name = name; }
  key(id) { return `peer:${this.name}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const ex = expiresIn ? ['EX', expiresIn] : [];
    const m = redis.multi().set(key, JSON.stringify(payload), ...ex);
    if (payload.grantId) {
      const g = `peer:grant:${payload.grantId}`;
      m.rpush(g, key);
      if (expiresIn) m.expire(g, expiresIn);
    }
    if (payload.userCode) m.set(`peer:userCode:${payload.userCode}`, id, ...ex);
    if (payload.uid) m.set(`peer:uid:${payload.uid}`, id, ...ex);
    await m.exec();
  }
  async find(id) {
    const key = this.key(id);
    const [v, consumed] = await redis.mget(key, `${key}:consumed`);
    if (!v) return undefined;
    const payload = JSON.parse(v);
    return consumed ? { ...payload, consumed: Number(consumed) } : payload;
  }
  async findByUid(uid) {
    const id = await redis.get(`peer:uid:${uid}`);
    return id ? this.find(id) : undefined;
  }
  async findByUserCode(userCode) {
    const id = await redis.get(`peer:userCode:${userCode}`);
    return id ? this.find(id) : undefined;
  }
  async consume(id) {
    const key = this.key(id);
    await redis.consumeModel(key, `${key}:consumed`, Math.floor(Date.now() / 1000));
  }
  async destroy(id) {
    const key = this.key(id);
    await redis.del(key, `${key}:consumed`);
  }
  async revokeByGrantId(grantId) {
    const g = `peer:grant:${grantId}`;
    const keys = await redis.lrange(g, 0, -1);
    await redis.del(g, ...keys, ...keys.map((k) => `${k}:consumed`));
  }
}

const AUD_JWT = 'https://fhir.example/r4';
const AUD_OPAQUE = 'https://opaque.example/r4';

const client = (client_id) => ({
  client_id,
  token_endpoint_auth_method: 'private_key_jwt',
  token_endpoint_auth_signing_alg: 'ES256',
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  jwks: clientJwks,
  scope: 'system/Observation.rs',
  id_token_signed_response_alg: 'ES256',
});

const provider = new Provider(issuer, {
  clients: [
    client('backend'),
    {
      ...client('backend-mtls'),
      token_endpoint_auth_method: 'self_signed_tls_client_auth',
      token_endpoint_auth_signing_alg: undefined,
      jwks: mtlsJwks,
      tls_client_certificate_bound_access_tokens: true,
    },
    {
      client_id: 'web',
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: ['https://app.example/cb'],
      jwks: clientJwks,
      scope: 'openid',
      id_token_signed_response_alg: 'ES256',
    },
    {
      ...client('rs-mtls'),
      token_endpoint_auth_method: 'self_signed_tls_client_auth',
      token_endpoint_auth_signing_alg: undefined,
      jwks: mtlsJwks,
    },
  ],
  jwks: { keys: [signing] },
  scopes: ['openid', 'system/Observation.rs'],
  clientAuthMethods: ['private_key_jwt', 'self_signed_tls_client_auth'],
  enabledJWA: { clientAuthSigningAlgValues: ['ES256'] },
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: [secrets.cookie] },
  ...(redis ? { adapter: RedisAdapter } : {}),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    pushedAuthorizationRequests: { enabled: true },
    mTLS: {
      enabled: true,
      selfSignedTlsClientAuth: true,
      certificateBoundAccessTokens: true,
      // The certificate of the TLS connection (Node verifies the handshake signature;
      // the client is matched by the certificate's thumbprint).
      getCertificate: (ctx) => ctx.socket.getPeerX509Certificate() ?? undefined,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => AUD_JWT,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'system/Observation.rs',
        audience: resource,
        accessTokenTTL: 300,
        accessTokenFormat: resource === AUD_OPAQUE ? 'opaque' : 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});
provider.proxy = false;

const esc = (v) => String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (res, body) => {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html><body>${body}</body></html>`);
};
const readForm = (req) => new Promise((resolve, reject) => {
  let data = '';
  req.setEncoding('utf8');
  req.on('data', (c) => { data += c; if (data.length > 65536) reject(new Error('too large')); });
  req.on('end', () => resolve(new URLSearchParams(data)));
  req.on('error', reject);
});

// The sign-in and consent pages, in the style of oidc-provider's documented examples.
async function interaction(req, res) {
  const [, , uid, action] = req.url.split('?')[0].split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (req.method === 'GET') {
    if (details.prompt.name === 'login') {
      return page(res, `<h1>Sign in</h1><form method="post" action="/interaction/${esc(uid)}/login"><input type="text" name="username"><input type="password" name="password"><button type="submit">Sign in</button></form>`);
    }
    return page(res, `<h1>Allow ${esc(details.params.client_id)}</h1><form method="post" action="/interaction/${esc(uid)}/confirm"><button type="submit" name="decision" value="allow">Allow</button></form>`);
  }
  const form = await readForm(req);
  if (action === 'login') {
    const user = form.get('username') ?? '';
    let ok = USERS.has(user);
    // The same verification cost for an unknown user.
    try { ok = (await argon2.verify(PASSWORD_HASH, form.get('password') ?? '')) && ok; } catch { ok = false; }
    if (!ok) return page(res, 'Invalid username or password');
    return provider.interactionFinished(req, res, { login: { accountId: user } }, { mergeWithLastSubmission: false });
  }
  if (action === 'confirm' && form.get('decision') === 'allow') {
    const { prompt: { details: missing }, params, session: { accountId } } = details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: params.client_id });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    if (missing.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return provider.interactionFinished(req, res, { error: 'access_denied' }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
https
  .createServer(
    {
      cert: fs.readFileSync(certPath),
      key: fs.readFileSync(keyPath),
      requestCert: true,
      rejectUnauthorized: false,
    },
    (req, res) => {
      if (req.url.startsWith('/interaction/')) {
        interaction(req, res).catch((e) => {
          res.writeHead(400, { 'content-type': 'text/plain' });
          res.end(String(e && e.message));
        });
        return;
      }
      callback(req, res);
    },
  )
  .listen(Number(port), '127.0.0.1', () => console.log(`READY ${issuer}`));
