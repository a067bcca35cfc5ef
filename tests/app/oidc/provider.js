// A real OpenID Connect provider (the certified `oidc-provider` package) for sparq's sign-in tests.
// Started by tests/app/oidc_server.py: `node provider.js CONFIG.json`, with SPARQ_OIDC_NODE_MODULES naming
// the folder where `npm install` put oidc-provider. The config file names the issuer, the port, the
// clients, the signing keys and an accounts file that is read at every sign-in, so a test changes a
// user's groups "at the provider" by rewriting that file.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const modules = process.env.SPARQ_OIDC_NODE_MODULES;
if (!modules) {
  throw new Error('set SPARQ_OIDC_NODE_MODULES to the node_modules folder holding oidc-provider');
}
const { default: Provider } = await import(
  pathToFileURL(path.join(modules, 'oidc-provider', 'lib', 'index.js')).href
);

const accounts = () => JSON.parse(readFileSync(config.accounts_file, 'utf8'));

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  cookies: { keys: ['sparq-test-only-cookie-key'] },
  // Every client must use PKCE: a sign-in without it is refused, so the tests prove sparq sends it.
  pkce: { required: () => true },
  claims: {
    openid: ['sub', 'groups'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  // Put the scope's claims (groups among them) into the ID token, as Keycloak's mappers do.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  ttl: { IdToken: config.id_token_ttl ?? 3600, AccessToken: 3600, Session: 3600, Interaction: 600, Grant: 3600 },
  async findAccount(ctx, sub) {
    const account = accounts()[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          preferred_username: account.preferred_username ?? sub,
          name: account.name ?? sub,
          email: account.email,
          email_verified: true,
          groups: account.groups ?? [],
        };
      },
    };
  },
  // A first-party client: no consent screen, every requested scope is granted.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
  },
});

provider.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${config.port} as ${config.issuer}`);
});
