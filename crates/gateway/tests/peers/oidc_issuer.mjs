// A real OAuth 2.1 authorization server for lockstep's gateway tests: npm `oidc-provider`
// (9.13.3), with resource indicators (RFC 8707) and the client-credentials grant, issuing
// ES256 JWT access tokens whose audience is the requested resource.
//
//   node oidc_issuer.mjs --modules DIR --port N --resource URL [--format jwt|opaque]
//
// --format opaque issues opaque access tokens instead, to be checked at the introspection
// endpoint (/token/introspection) by the client `lockstep-gateway` /
// `secret-gateway-0123456789`.
//
// DIR is an npm prefix where `oidc-provider` is installed (DIR/node_modules/oidc-provider).
//
// Clients (client_secret_basic): `agent-analyst` / `secret-analyst-0123456789` and
// `agent-intern` / `secret-intern-0123456789`; each token carries `role` (analyst, intern).
// Prints `READY <issuer url>` once listening on 127.0.0.1 only. SIGTERM stops it.
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const arg = (name) => {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing ${name}`);
  return process.argv[i + 1];
};
const port = Number(arg('--port'));
const resource = arg('--resource');
const format = process.argv.includes('--format') ? arg('--format') : 'jwt';
const issuer = `http://127.0.0.1:${port}`;
const entry = join(arg('--modules'), 'node_modules', 'oidc-provider', 'lib', 'index.js');
const { default: Provider } = await import(pathToFileURL(entry).href);

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'oidc-es256-1', alg: 'ES256', use: 'sig' };
const roles = { 'agent-analyst': 'analyst', 'agent-intern': 'intern', 'lockstep-gateway': 'gateway' };

const provider = new Provider(issuer, {
  clients: Object.keys(roles).map((id) => ({
    client_id: id,
    client_secret: `secret-${roles[id]}-0123456789`,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: 'mcp:tools',
    // The only key is ES256 (the default would be RS256).
    id_token_signed_response_alg: 'ES256',
  })),
  jwks: { keys: [jwk] },
  scopes: ['mcp:tools'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true, allowedPolicy: async () => true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator) => ({
        scope: 'mcp:tools',
        audience: indicator,
        accessTokenTTL: 300,
        accessTokenFormat: format,
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  extraTokenClaims: (_ctx, token) => ({ role: roles[token.clientId] }),
});
provider.proxy = false;
const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
