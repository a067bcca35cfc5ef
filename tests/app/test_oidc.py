"""OpenID Connect sign-in against a real provider (`oidc-provider` on Node.js, tests/app/oidc_server.py):
real ID tokens are validated, their groups and role replace the stored ones at every sign-in and access
follows; altered, re-signed and foreign tokens are refused; identities never merge by name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import inspect

from app.api_keys import ApiKeys
from app.assistant import SparqError
from app.config import Settings
from app.oidc import OidcConfig, OidcError, ProviderKeys, identity_from_claims, sign_in, validate_id_token
from app.users import IdentityConflict
from tests.app.oidc_server import (
    ADMIN_GROUP,
    CLIENT_ID,
    CLIENT_SECRET,
    OTHER_CLIENT_ID,
    OTHER_CLIENT_SECRET,
    OidcProvider,
    run_oidc_provider,
)

REDIRECT = "http://127.0.0.1:8501/oauth2callback"  # never contacted: the tests exchange the code themselves


@pytest.fixture(scope="module")
def provider(tmp_path_factory) -> Iterator[OidcProvider]:
    yield from run_oidc_provider(tmp_path_factory.mktemp("oidc"), REDIRECT)


@pytest.fixture
def config(provider: OidcProvider) -> OidcConfig:
    return OidcConfig(
        issuer=provider.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_url=REDIRECT,
        admin_groups=(ADMIN_GROUP,),
    )


@pytest.fixture
def keys(config: OidcConfig) -> ProviderKeys:
    return ProviderKeys(config)


@pytest.fixture(autouse=True)
def _reset_provider(provider: OidcProvider) -> Iterator[None]:
    provider.proxy.mode = None
    yield
    provider.proxy.mode = None
    for user, groups in {"alice": ["hr"], "bob": ["eng"], "carol": ["eng", ADMIN_GROUP]}.items():
        provider.set_groups(user, groups)


def test_sign_in_takes_groups_and_role_from_the_token_and_access_follows(
    assistant, provider, config, keys, tmp_path
):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pay.md").write_text("# Pay\n\nThe orchid bonus pool is three percent of salaries.\n")
    assistant.ingest(docs, collection="people", groups=["hr"])

    alice = sign_in(assistant.users, provider.tokens_for("alice")["id_token"], config, keys)
    assert (alice.name, alice.groups, alice.role, alice.source) == ("alice", ["hr"], "employee", "oidc")
    assert (alice.oidc_issuer, alice.oidc_subject, alice.email) == (
        provider.issuer,
        "alice",
        "alice@example.org",
    )
    assert alice.must_change_password is False and assistant.users.authenticate("alice", "") is None
    assert assistant.search("orchid bonus pool", user="alice")
    bob = sign_in(assistant.users, provider.tokens_for("bob")["id_token"], config, keys)
    assert bob.groups == ["eng"] and not assistant.search("orchid bonus pool", user="bob")

    # The directory changes at the provider: the next sign-in replaces the groups, and access follows.
    provider.set_groups("alice", ["eng"])
    provider.set_groups("bob", ["hr"])
    assert sign_in(assistant.users, provider.tokens_for("alice")["id_token"], config, keys).groups == ["eng"]
    assert sign_in(assistant.users, provider.tokens_for("bob")["id_token"], config, keys).groups == ["hr"]
    assert not assistant.search("orchid bonus pool", user="alice")
    assert assistant.search("orchid bonus pool", user="bob")
    assert [u.name for u in assistant.users.list()] == ["alice", "bob"]  # the same rows, updated

    # The admin rule: members of the admin group are admins, and stop being admins when they leave it.
    assert sign_in(assistant.users, provider.tokens_for("carol")["id_token"], config, keys).role == "admin"
    provider.set_groups("carol", ["eng"])
    assert sign_in(assistant.users, provider.tokens_for("carol")["id_token"], config, keys).role == "employee"


def test_without_an_admin_rule_the_stored_role_stays(assistant, provider, config, keys):
    plain = OidcConfig(**{**config.__dict__, "admin_groups": ()})
    assert sign_in(assistant.users, provider.tokens_for("carol")["id_token"], plain, keys).role == "employee"
    assistant.users.update("carol", role="admin")  # promoted by an administrator in sparq
    assert sign_in(assistant.users, provider.tokens_for("carol")["id_token"], plain, keys).role == "admin"


@pytest.mark.parametrize(
    "mode, reason",
    [
        ("tamper", "signature"),  # groups rewritten under the provider's signature
        ("audience", "audience"),  # validly signed by the provider's key, for another client
        ("issuer", "issuer"),
        ("expired", "expired"),
        ("unknown_key", "unknown_key"),  # signed with a key the provider does not publish
    ],
)
def test_altered_and_foreign_tokens_are_refused_and_nobody_is_signed_in(
    assistant, provider, config, keys, mode, reason
):
    provider.proxy.mode = mode
    token = provider.tokens_for("alice")["id_token"]
    assert provider.proxy.rewritten > 0
    with pytest.raises(OidcError) as refused:
        sign_in(assistant.users, token, config, keys)
    assert refused.value.reason == reason
    assert assistant.users.list() == []


def test_a_real_token_for_another_client_is_refused(assistant, provider, config, keys):
    token = provider.tokens_for("alice", client_id=OTHER_CLIENT_ID, client_secret=OTHER_CLIENT_SECRET)[
        "id_token"
    ]
    with pytest.raises(OidcError) as refused:
        validate_id_token(token, config, keys)
    assert refused.value.reason == "audience"


def test_a_token_checked_after_its_expiry_is_refused(provider, config, keys):
    token = provider.tokens_for("alice")["id_token"]
    claims = validate_id_token(token, config, keys)
    with pytest.raises(OidcError) as refused:
        validate_id_token(token, config, keys, now=claims["exp"] + 3600)
    assert refused.value.reason == "expired"


def test_two_providers_alice_never_merge_and_local_accounts_are_not_taken_over(
    assistant, provider, config, keys
):
    assistant.users.add("bob", password="local-bob-pw")  # a local account named like the provider's bob
    with pytest.raises(OidcError) as refused:
        sign_in(assistant.users, provider.tokens_for("bob")["id_token"], config, keys)
    assert refused.value.reason == "conflict"
    assert assistant.users.get("bob").source == "local" and assistant.users.get("bob").oidc_subject is None

    sign_in(assistant.users, provider.tokens_for("alice")["id_token"], config, keys)
    with pytest.raises(IdentityConflict):  # another issuer's alice
        assistant.users.sign_in_oidc(
            issuer="https://other.example.org",
            subject="alice",
            name="alice",
            groups=["eng", "hr"],
            role=None,
            email=None,
        )
    assert assistant.users.get("alice").groups == ["hr"]
    assert assistant.users.get("alice").oidc_issuer == provider.issuer


def test_a_renamed_user_keeps_their_account_by_subject(assistant, provider, config, keys):
    token = provider.tokens_for("alice")["id_token"]
    first = sign_in(assistant.users, token, config, keys)
    renamed = OidcConfig(
        **{**config.__dict__, "username_claim": "email"}
    )  # the name claim now says alice@...
    again = sign_in(assistant.users, token, renamed, keys)
    assert again.id == first.id and again.name == "alice"


def test_a_disabled_user_is_refused_and_their_api_keys_stop(assistant, provider, config, keys):
    sign_in(assistant.users, provider.tokens_for("bob")["id_token"], config, keys)
    api_keys = ApiKeys(assistant.engine, assistant.users)
    _, key = api_keys.create("bob")
    assert api_keys.verify(key).name == "bob"
    assistant.users.set_disabled("bob", True)
    assert api_keys.verify(key) is None
    with pytest.raises(OidcError) as refused:
        sign_in(assistant.users, provider.tokens_for("bob")["id_token"], config, keys)
    assert refused.value.reason == "disabled"
    with pytest.raises(SparqError):
        assistant.search("anything", user="bob")


def test_linking_a_directory_user_is_opt_in_and_the_directory_can_then_disable_them(
    assistant, provider, config, keys
):
    assistant.users.add("alice", groups=["hr", "staff"], source="ldap")  # synced from LDAP earlier
    with pytest.raises(OidcError) as refused:
        sign_in(assistant.users, provider.tokens_for("alice")["id_token"], config, keys)
    assert refused.value.reason == "conflict"
    linking = OidcConfig(**{**config.__dict__, "link_ldap_users": True})
    alice = sign_in(assistant.users, provider.tokens_for("alice")["id_token"], linking, keys)
    assert (alice.source, alice.groups, alice.oidc_subject) == ("ldap", ["hr"], "alice")
    _, key = ApiKeys(assistant.engine, assistant.users).create("alice")
    assistant.users.set_disabled("alice", True)  # what the next LDAP sync does when alice leaves
    assert ApiKeys(assistant.engine, assistant.users).verify(key) is None
    with pytest.raises(OidcError):
        sign_in(assistant.users, provider.tokens_for("alice")["id_token"], linking, keys)


def test_groups_claim_by_nested_path_and_refused_shapes(config):
    base = {"iss": config.issuer, "sub": "s-1", "preferred_username": "dora"}
    nested = OidcConfig(**{**config.__dict__, "groups_claim": "realm_access.roles"})
    assert identity_from_claims({**base, "realm_access": {"roles": ["hr", "hr"]}}, nested).groups == ["hr"]
    assert identity_from_claims({**base, "groups": "hr"}, config).groups == ["hr"]
    assert identity_from_claims(base, config).groups == []
    with pytest.raises(OidcError):
        identity_from_claims({**base, "groups": [{"name": "hr"}]}, config)
    assert identity_from_claims({"iss": config.issuer, "sub": "s-2"}, config).name == "s-2"


def test_the_migration_adds_the_identity_columns_unique_as_a_pair(assistant):
    engine = assistant.engine
    columns = {c["name"] for c in inspect(engine).get_columns("users")}
    assert {"oidc_issuer", "oidc_subject"} <= columns
    unique = [ix["column_names"] for ix in inspect(engine).get_indexes("users") if ix.get("unique")]
    assert ["oidc_issuer", "oidc_subject"] in unique


def test_settings_check_the_provider_configuration(tmp_path):
    with pytest.raises(ValueError, match="SPARQ_OIDC_CLIENT_ID"):
        Settings(data_dir=tmp_path, oidc_issuer="https://id.example.org/realms/acme")
    with pytest.raises(ValueError, match="/oauth2callback"):
        Settings(
            data_dir=tmp_path,
            oidc_issuer="https://id.example.org",
            oidc_client_id="sparq",
            oidc_client_secret="s",
            oidc_redirect_url="https://sparq.example.org/",
        )
    with pytest.raises(ValueError, match="SPARQ_LOCAL_LOGIN"):
        Settings(data_dir=tmp_path, local_login=False)
    settings = Settings(
        data_dir=tmp_path,
        oidc_issuer="https://id.example.org",
        oidc_client_id="sparq",
        oidc_client_secret="s3cret-value",
        oidc_redirect_url="https://sparq.example.org/oauth2callback",
        oidc_admin_groups="sparq-admins, it-admins",
    )
    assert settings.oidc_admin_groups == ["sparq-admins", "it-admins"]
    assert "s3cret-value" not in repr(settings)
    from app.oidc import oidc_config

    assert "s3cret-value" not in repr(oidc_config(settings))


def test_the_cookie_secret_is_made_once_readable_only_by_the_owner(tmp_path):
    from app.oidc import COOKIE_SECRET_FILE, cookie_secret, oidc_config, streamlit_auth_secrets

    settings = Settings(
        data_dir=tmp_path / "data",
        oidc_issuer="https://id.example.org/realms/acme",
        oidc_client_id="sparq",
        oidc_client_secret="s3cret-value",
        oidc_redirect_url="https://sparq.example.org/oauth2callback",
    )
    first = cookie_secret(settings)
    assert len(first) >= 32 and cookie_secret(settings) == first
    assert (settings.data_dir / COOKIE_SECRET_FILE).stat().st_mode & 0o777 == 0o600
    given = Settings(**{**settings.model_dump(), "oidc_cookie_secret": "from-the-secret-store-0123456789"})
    assert cookie_secret(given) == "from-the-secret-store-0123456789"
    auth = streamlit_auth_secrets(oidc_config(settings), first)
    assert (
        auth["server_metadata_url"] == "https://id.example.org/realms/acme/.well-known/openid-configuration"
    )
    assert auth["expose_tokens"] == ["id"] and auth["client_secret"] == "s3cret-value"
