// A real OpenID Connect provider for tests/it/oidc.rs (and the browser test): panva's
// oidc-provider with its development login/consent pages. Settings come from the environment:
// OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI. Accounts: alice (staff),
// bob (admins, staff), carol (others); the dev login page takes any password.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

// Signing keys made at start: RSA (RS256) and P-256 (ES256).
const jwk = (key, kid) => ({ ...key.privateKey.export({ format: 'jwk' }), kid, use: 'sig' });
const keys = [
  jwk(generateKeyPairSync('rsa', { modulusLength: 2048 }), 'rsa-1'),
  jwk(generateKeyPairSync('ec', { namedCurve: 'P-256' }), 'ec-1'),
];

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const groups = { alice: ['staff'], bob: ['admins', 'staff'], carol: ['others'] };

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.OIDC_CLIENT_ID,
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: [process.env.OIDC_REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: process.env.OIDC_ALG || 'RS256',
  }],
  jwks: { keys },
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256'] },
  pkce: { required: () => true },
  conformIdTokenClaims: false,
  claims: { openid: ['sub'], profile: ['preferred_username', 'groups', 'name'] },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    if (!groups[id]) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: `sub-${id}`, preferred_username: id, name: id, groups: groups[id] };
      },
    };
  },
});
provider.proxy = false;
provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
