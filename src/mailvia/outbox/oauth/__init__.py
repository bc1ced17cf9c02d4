"""OAuth mailboxes (Gmail, Microsoft 365): the use cases, each over a narrow port of its own.

- `ports.py`: what these use cases need: the stored app, flows and tokens (sealed), and the
  provider's endpoints (`ProviderClient`, an adapter in transport/oauth_client.py).
- `apps.py`: the organization's own OAuth app per provider (admins), and the operator-wide
  fallback from the settings.
- `connect.py`: the connect flow: authorization code with PKCE and `state`, bound to the web
  session of the user who started it, finished once by the provider's callback.
- `mailboxes.py`: what a finished consent makes (a new OAuth mailbox, or an existing channel
  reconnected or turned into one, its held mail released), disconnect and remove (revoking
  what the provider allows), and the token facts the pages and payloads show.
- `credentials.py`: the credential source for OAuth mailboxes: the access token from memory,
  refreshed ahead of expiry, one refresh per channel across every process (a store lease).
"""
