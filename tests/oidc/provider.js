// A real OpenID provider (node-oidc-provider, OpenID Certified) on loopback for envyard's identity tests.
//
//   node provider.js PORT CONFIG_JSON
//
// CONFIG_JSON: {"clients": [{client_id, client_secret, redirect_uris}], "users": {"alice": {"groups": [...],
// "email": "..."}}, "expiring": ["user whose ID tokens live one second"]}. Prints "ready ISSUER" when listening.
// Sign-in without forms: the test follows the redirect to /interaction/UID and then opens
// /interaction/UID/login?user=NAME; consent is granted for every scope asked (loadExistingGrant).
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const config = JSON.parse(process.argv[3]);
const issuer = `http://127.0.0.1:${port}`;
const users = config.users || {};
const expiring = new Set(config.expiring || []);

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  })),
  async findAccount(ctx, id) {
    if (!users[id]) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: id, email: users[id].email || `${id}@example.test`,
                 groups: users[id].groups || [] };
      },
    };
  },
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], email: ['email'], groups: ['groups'] },
  scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
  conformIdTokenClaims: false, // the scopes' claims go into the ID token too (like Keycloak's and Dex's)
  cookies: { keys: ['envyard-tests-only'] },
  features: { devInteractions: { enabled: false }, deviceFlow: { enabled: true } },
  pkce: { required: () => true, methods: ['S256'] },
  ttl: {
    IdToken: (ctx) => (ctx.oidc && ctx.oidc.account && expiring.has(ctx.oidc.account.accountId) ? 1 : 3600),
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId,
                                               accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email groups offline_access');
    grant.addOIDCClaims(['preferred_username', 'name', 'email', 'groups']);
    await grant.save();
    return grant;
  },
});

provider.use(async (ctx, next) => {
  const found = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!found) return next();
  if (!found[2]) {
    ctx.type = 'text/plain';
    ctx.body = `sign in: GET /interaction/${found[1]}/login?user=NAME`;
    return undefined;
  }
  const user = ctx.query.user;
  if (!users[user]) {
    ctx.status = 400;
    ctx.body = `no user ${user}`;
    return undefined;
  }
  return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: user } },
                                      { mergeWithLastSubmission: false });
});

provider.listen(port, '127.0.0.1', () => { console.log(`ready ${issuer}`); });
