"""The LDAP directory sync's configuration from SPARQ_LDAP_* settings (see app.directory_sync), shared by
`sparq users sync-ldap` and the scheduled sync of `sparq serve`."""

from __future__ import annotations

from app.config import Settings
from app.directory_sync import DirectoryError, LdapConfig


def ldap_config(settings: Settings) -> LdapConfig:
    """The sync's configuration from SPARQ_LDAP_* settings; a clear error names what is missing."""
    missing = [
        name for name in ("ldap_url", "ldap_user_base", "ldap_group_base") if not getattr(settings, name)
    ]
    if missing:
        raise DirectoryError("set " + ", ".join(f"SPARQ_{m.upper()}" for m in missing) + " to sync from LDAP")
    password = settings.ldap_bind_password.get_secret_value() if settings.ldap_bind_password else None
    return LdapConfig(
        url=settings.ldap_url or "",
        bind_dn=settings.ldap_bind_dn,
        bind_password=password,
        user_base=settings.ldap_user_base or "",
        group_base=settings.ldap_group_base or "",
        user_filter=settings.ldap_user_filter,
        group_filter=settings.ldap_group_filter,
        name_attribute=settings.ldap_name_attribute,
        email_attribute=settings.ldap_email_attribute,
        group_name_attribute=settings.ldap_group_name_attribute,
        member_attribute=settings.ldap_member_attribute,
        start_tls=settings.ldap_start_tls,
        ca_file=settings.ldap_ca_file,
    )
