// GET /interaction/:uid - auto-approving stand-in for a login/consent UI.
//
// The provider redirects the user agent here whenever it needs end-user
// interaction. This handler logs in the account named by the authorization
// request's `login_hint` (default `user-1`) and consents to everything that
// was requested, then hands the result back to the provider with
// interactionFinished(), which redirects to /auth/:uid to resume the real
// authorization flow.

import { accountIdFor } from './login.mjs';

export async function handleInteraction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;

  let result;
  switch (prompt.name) {
    case 'login':
      result = { login: { accountId: accountIdFor(params.login_hint) } };
      break;
    case 'consent': {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
      if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
      if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
      if (missingResourceScopes) {
        for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
      }
      result = { consent: { grantId: await grant.save() } };
      break;
    }
    default:
      result = { error: 'access_denied', error_description: `unsupported prompt ${prompt.name}` };
  }

  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}
