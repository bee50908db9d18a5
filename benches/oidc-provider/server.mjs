// oidc-provider as heartgate's load-test peer: the same client (private_key_jwt, ES256),
// client_credentials with a JWT access token (ES256) for one audience, and opaque tokens
// for the introspection scenario, and a resource server `rs-mtls` that introspects with
// self_signed_tls_client_auth (RFC 8705 §2.2) as heartgate's does; `backend-mtls` gets
// certificate-bound JWTs by self_signed_tls_client_auth, and `web` pushes authorization
// requests (RFC 9126) with private_key_jwt, as the heartgate clients of the same names. Usage:
//   node server.mjs PORT CERT.pem KEY.pem CLIENT_JWKS.json MTLS_JWKS.json
import fs from 'node:fs';
import https from 'node:https';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const [port, certPath, keyPath, jwksPath, mtlsJwksPath] = process.argv.slice(2);
const issuer = `https://127.0.0.1:${port}`;
const clientJwks = JSON.parse(fs.readFileSync(jwksPath, 'utf8'));
const mtlsJwks = JSON.parse(fs.readFileSync(mtlsJwksPath, 'utf8'));
const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signing = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: 'peer-es256' };
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

https
  .createServer(
    {
      cert: fs.readFileSync(certPath),
      key: fs.readFileSync(keyPath),
      requestCert: true,
      rejectUnauthorized: false,
    },
    provider.callback(),
  )
  .listen(Number(port), '127.0.0.1', () => console.log(`READY ${issuer}`));
