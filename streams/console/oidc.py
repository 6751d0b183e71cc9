"""Single sign-on with OpenID Connect (authlib): the museum's identity provider signs curators in.

Configured by ARTROUTE_CONSOLE_OIDC_* (issuer, client id and secret, the claims naming the user and
their groups, the groups that make an admin or a curator). `OidcConfig.from_settings` checks them
when the console starts (a one-line error, never a half-working login): the issuer must be an https
URL (http only on loopback, for tests), client id and secret must be set. The flow is the
authorization-code flow with PKCE (S256), `state` and `nonce` kept in the signed session, the ID
token's signature checked against the provider's JWKS and its issuer, audience and expiry checked by
authlib. The console's redirect URI is <ARTROUTE_CONSOLE_PUBLIC_URL or the request's origin>/auth/callback:
register exactly that at the provider.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from streams.console.users import User, check_name
from streams.contract.cli import UserError
from streams.worker.settings import Settings

CALLBACK_PATH = "/auth/callback"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class OidcConfigError(UserError):
    """ARTROUTE_CONSOLE_OIDC_* settings that cannot work."""


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    username_claim: str
    roles_claim: str
    admin_role: str
    curator_role: str

    @property
    def metadata_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    @classmethod
    def from_settings(cls, s: Settings) -> "OidcConfig | None":
        """None when OIDC is off (no issuer); OidcConfigError when the settings cannot work."""
        if not s.console_oidc_issuer:
            return None
        u = urlsplit(s.console_oidc_issuer)
        if u.scheme not in ("https", "http") or not u.hostname or u.query or u.fragment:
            raise OidcConfigError(f"ARTROUTE_CONSOLE_OIDC_ISSUER {s.console_oidc_issuer!r} is not an issuer URL "
                                  "(https://sso.example.org/realms/museum)")
        if u.scheme == "http" and u.hostname not in LOOPBACK:
            raise OidcConfigError("ARTROUTE_CONSOLE_OIDC_ISSUER must use https (http only on loopback, for tests)")
        secret = s.console_oidc_client_secret.get_secret_value() if s.console_oidc_client_secret else ""
        if not s.console_oidc_client_id or not secret:
            raise OidcConfigError("ARTROUTE_CONSOLE_OIDC_CLIENT_ID and ARTROUTE_CONSOLE_OIDC_CLIENT_SECRET are "
                                  "required with ARTROUTE_CONSOLE_OIDC_ISSUER")
        for name in ("username_claim", "roles_claim", "admin_role"):
            if not getattr(s, f"console_oidc_{name}").strip():
                raise OidcConfigError(f"ARTROUTE_CONSOLE_OIDC_{name.upper()} must not be empty")
        if s.console_public_url and urlsplit(s.console_public_url).scheme not in ("https", "http"):
            raise OidcConfigError(f"ARTROUTE_CONSOLE_PUBLIC_URL {s.console_public_url!r} is not an http(s) URL")
        return cls(s.console_oidc_issuer, s.console_oidc_client_id, secret, s.console_oidc_username_claim,
                   s.console_oidc_roles_claim, s.console_oidc_admin_role, s.console_oidc_curator_role)

    def user(self, claims: dict) -> User | None:
        """The console user for these ID-token claims, or None when the groups allow no role."""
        name = str(claims.get(self.username_claim) or "").strip()
        if not name:
            return None
        groups = claims.get(self.roles_claim) or []
        groups = {groups} if isinstance(groups, str) else {str(g) for g in groups}
        if self.admin_role in groups:
            role = "admin"
        elif not self.curator_role or self.curator_role in groups:
            role = "curator"
        else:
            return None
        try:
            check_name(name)
        except UserError:
            return None
        return User(name, role, "oidc")


def make_oauth(config: OidcConfig):
    """An authlib client registered as "sso" (discovery document, PKCE S256)."""
    from authlib.integrations.starlette_client import OAuth

    oauth = OAuth()
    oauth.register("sso", client_id=config.client_id, client_secret=config.client_secret,
                   server_metadata_url=config.metadata_url,
                   client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"})
    return oauth.create_client("sso")
