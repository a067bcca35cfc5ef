"""One settings object for the whole product: environment (`SPARQ_*`) over an optional TOML file over defaults."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from model.factory import BACKENDS, DEFAULT_LLM_TIMEOUT_S
from retrieval import index_kinds


def _toml_file() -> Path | None:
    explicit = os.environ.get("SPARQ_CONFIG_FILE")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"SPARQ_CONFIG_FILE points to {path}, which does not exist")
        return path
    local = Path("sparq.toml")
    return local if local.is_file() else None


class Settings(BaseSettings):
    """Every knob an operator may turn; documented in README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="SPARQ_", extra="ignore")

    data_dir: Path = Path("./sparq-data")
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL (may hold a password, so never printed); defaults to SQLite "
        "inside data_dir. Read it through `resolved_database_url`.",
    )

    # Embedding and chunking
    embedding_model: str | None = Field(
        default=None,
        description="Local sentence-transformers directory; defaults to the shipped all-MiniLM-L6-v2.",
    )
    embedding_batch_size: int = 64
    ingest_batch_chunks: int = Field(
        default=1024, ge=1, description="Chunks embedded together and committed in one transaction."
    )
    chunk_tokens: int = 200
    chunk_overlap_tokens: int = 32
    max_file_mb: int = 200
    loader_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Seconds one file may take to parse; then its worker is stopped and the "
        'file fails with "timed out".',
    )
    loader_memory_mb: int = Field(
        default=2048,
        ge=64,
        description="Memory one file's parser may use above its start (a decompression bomb "
        "fails that file, not the ingest).",
    )
    loader_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="How far below sparq's CPU priority the parser processes run (0: the same): the encoder "
        "and the answer path keep their cores; parsing gets what they leave, all of it when they wait.",
    )
    loader_workers: int | None = Field(
        default=None, ge=1, description="Parser processes (reused across files); defaults to the CPU cores."
    )
    ingest_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders server-folder ingest may read (SPARQ_INGEST_ROOTS: paths separated by ':', or a JSON "
        "list). Empty: the web UI refuses server folders, while the CLI may ingest any path. The data dir is "
        "never ingested either way.",
    )

    @field_validator("ingest_roots", mode="before")
    @classmethod
    def _split_ingest_roots(cls, v: object) -> object:
        """An environment value is one string: a JSON list, or paths joined with os.pathsep like PATH."""
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(os.pathsep) if part.strip()]
        return v

    # OCR of scans and images (see README "Scans and images (OCR)"); given to the loader workers
    ocr_languages: str = Field(
        default="eng+chi_sim",
        description="Tesseract languages read, joined by '+' (each needs its Debian package "
        "tesseract-ocr-LANG; reading fewer is faster).",
    )
    ocr_dpi: int = Field(
        default=300,
        ge=72,
        le=600,
        description="Highest resolution (dpi) a scanned PDF page is rendered at for OCR; "
        "a page scanned at less is read at its own.",
    )

    @field_validator("llm_backend")
    @classmethod
    def _registered_backend(cls, v: str) -> str:
        """One list of engines, the factory's registry: a new engine needs no change here."""
        name = v.strip().lower()
        if name not in BACKENDS:
            raise ValueError(f"unknown LLM backend {v!r}; choose one of {', '.join(BACKENDS)}")
        return name

    @field_validator("ocr_languages")
    @classmethod
    def _ocr_language_codes(cls, v: str) -> str:
        """Checked here, at start-up: the value becomes Tesseract arguments in every loader worker."""
        codes = v.strip().split("+")
        if not all(c and c.isascii() and c.replace("_", "").isalnum() for c in codes):
            raise ValueError(
                f"SPARQ_OCR_LANGUAGES must be Tesseract language codes joined by '+' (e.g. eng+chi_sim), got {v!r}"
            )
        return v.strip()

    query_threads: int = 1

    # Retrieval
    search_k: int = 8
    dense_weight: float = 1.0
    keyword_weight: float = 1.0
    rrf_k: int = 60
    ann_threshold: int = 50_000
    index_type: str = Field(
        default="auto",
        description="The FAISS index: auto (flat below SPARQ_ANN_THRESHOLD vectors, HNSW above) or a kind "
        f"registered in retrieval/index_kinds ({', '.join(index_kinds.KINDS)}).",
    )

    @field_validator("index_type")
    @classmethod
    def _registered_index_type(cls, v: str) -> str:
        """One list of index kinds, retrieval's registry: a new kind needs no change here."""
        name = v.strip().lower()
        if name != "auto" and name not in index_kinds.KINDS:
            raise ValueError(
                f"unknown index type {v!r}; choose auto or one of {', '.join(index_kinds.KINDS)}"
            )
        return name

    # Model
    llm_backend: str = Field(
        default="llamacpp",
        description="The engine: a name registered in model/factory.py ENGINES (llamacpp, "
        "ik_llama, transformers, openai).",
    )
    llm_model: str | None = None
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None  # never printed: read with .get_secret_value()
    llm_timeout_s: float = DEFAULT_LLM_TIMEOUT_S  # the same default as model.factory.engine_from_env
    llm_threads: int | None = None
    llm_top_k: int | None = Field(
        default=None,
        ge=1,
        description="Experts per token to serve instead of the model's own (trades answer quality for cost).",
    )
    max_answer_tokens: int = 256
    llm_context_window: int | None = Field(
        default=None, description="Override the engine's window (e.g. to cap llama.cpp's KV cache)."
    )
    ask_passages: int = Field(default=6, ge=1, le=50, description="Passages retrieved for each question.")

    # HTTP API (`sparq serve`)
    api_rate_limit_per_minute: int = Field(
        default=60, ge=0, description="Requests per minute per API key (0: no limit)."
    )
    api_model_slots: int = Field(
        default=1, ge=1, description="Answers generated at once; others wait in the queue."
    )
    api_queue_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a request waits for a model slot before a 503 with Retry-After.",
    )

    # LDAP / Active Directory group sync (`sparq users sync-ldap`)
    ldap_url: str | None = Field(default=None, description="ldap://host:389 or ldaps://host:636")
    ldap_bind_dn: str | None = None
    ldap_bind_password: SecretStr | None = None
    ldap_user_base: str | None = None
    ldap_group_base: str | None = None
    ldap_user_filter: str = "(objectClass=inetOrgPerson)"
    ldap_group_filter: str = "(|(objectClass=groupOfNames)(objectClass=group))"
    ldap_name_attribute: str = Field(default="uid", description="sAMAccountName on Active Directory")
    ldap_email_attribute: str = "mail"
    ldap_group_name_attribute: str = "cn"
    ldap_member_attribute: str = "member"
    ldap_start_tls: bool = False
    ldap_ca_file: str | None = Field(default=None, description="CA bundle to verify the server's certificate")
    ldap_sync_minutes: float | None = Field(
        default=None,
        gt=0,
        description="Sync from LDAP inside `sparq serve` this often (unset: only by command).",
    )

    # Sources that sync themselves (`sparq sources ...`; see README "Sources")
    source_schedule: bool = Field(
        default=True,
        description="Sync due sources in the background of `sparq serve` and `sparq ui` (false: "
        "this process never does; `sparq sources sync` still works).",
    )
    source_poll_seconds: float = Field(
        default=15.0, gt=0, description="How often the scheduler looks for due sources."
    )
    source_hosts: str = Field(
        default="",
        description="Host names (comma-separated) a web admin may add web-site and IMAP sources for; "
        "empty: only `sparq sources add` on the server may (the console may name any host).",
    )

    # OpenID Connect sign-in for the web app (Keycloak, Entra ID, Okta, Authentik...); see README "Identity"
    oidc_issuer: str | None = Field(
        default=None,
        description="The provider's issuer URL; its discovery document is ISSUER/.well-known/"
        "openid-configuration. Unset: no single sign-on, local passwords only.",
    )
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_redirect_url: str | None = Field(
        default=None,
        description="This app's callback as registered at the provider: https://HOST/oauth2callback",
    )
    oidc_groups_claim: str = Field(
        default="groups",
        description="ID-token claim with the user's groups (a dotted path reaches a nested one).",
    )
    oidc_username_claim: str = Field(
        default="preferred_username",
        description="ID-token claim that names the sparq user (e-mail, then sub, if absent).",
    )
    oidc_admin_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Groups (comma-separated) whose members sign in as admins; set, the role "
        "follows the token at every sign-in; unset, roles are kept as sparq has them.",
    )
    oidc_scopes: str = "openid profile email"
    oidc_prompt: str = Field(
        default="",
        description="OIDC prompt sent at sign-in: empty (the provider's session is reused), login, "
        "select_account or consent.",
    )
    oidc_cookie_secret: SecretStr | None = Field(
        default=None,
        description="Signs the sign-in cookies; unset, a random one kept in the data dir (share it "
        "between replicas).",
    )
    oidc_link_ldap_users: bool = Field(
        default=False,
        description="A first sign-in may take over the LDAP-synced user of the same name (only when "
        "the provider's user names are the directory's, e.g. Keycloak federating that LDAP).",
    )
    local_login: bool = Field(
        default=True,
        description="Offer sign-in with sparq's own passwords; false leaves single sign-on only.",
    )

    @field_validator("oidc_admin_groups", mode="before")
    @classmethod
    def _split_admin_groups(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return v

    @property
    def oidc_enabled(self) -> bool:
        """Single sign-on is configured (an issuer is set), so the sign-in page offers it."""
        return bool(self.oidc_issuer)

    # Sign-in sessions
    session_idle_minutes: float = Field(
        default=60.0, gt=0, description="A web session unused this long is ended (sign in again)."
    )
    session_lifetime_hours: float = Field(
        default=12.0, gt=0, description="A web session ends this long after sign-in, however active."
    )

    # Cost model (documented defaults; all overridable)
    cpu_watts: float = 65.0
    gpu_watts: float = 700.0
    pue: float = 1.4
    electricity_usd_per_kwh: float = 0.15
    hardware_usd: float = 8000.0
    hardware_lifetime_years: float = 4.0
    hardware_utilisation: float = 0.3
    gpu: bool = False
    cloud_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "gpt-4o-mini": (0.15, 0.60),
            "gpt-4o": (2.50, 10.00),
            "claude-3-5-haiku": (0.80, 4.00),
        },
        description="USD per million (input, output) tokens, for the cloud comparison.",
    )

    @field_validator("chunk_tokens")
    @classmethod
    def _chunk_positive(cls, v: int) -> int:
        if v < 16:
            raise ValueError("chunk_tokens must be at least 16")
        return v

    @field_validator("chunk_overlap_tokens")
    @classmethod
    def _overlap_nonnegative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("chunk_overlap_tokens must be >= 0")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Settings come from arguments, then SPARQ_* variables, then the TOML file when there is one."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_file()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    def model_post_init(self, __context: Any) -> None:
        """Refuse settings that contradict each other at startup, not at the first request that needs them."""
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError("chunk_overlap_tokens must be smaller than chunk_tokens")
        if self.oidc_issuer:
            missing = [
                n
                for n in ("oidc_client_id", "oidc_client_secret", "oidc_redirect_url")
                if not getattr(self, n)
            ]
            if missing:
                raise ValueError(
                    "SPARQ_OIDC_ISSUER is set: also set " + ", ".join(f"SPARQ_{m.upper()}" for m in missing)
                )
            if not str(self.oidc_redirect_url).rstrip("/").endswith("/oauth2callback"):
                raise ValueError(
                    "SPARQ_OIDC_REDIRECT_URL must be this app's address ending in /oauth2callback"
                )
        if not self.local_login and not self.oidc_issuer:
            raise ValueError("SPARQ_LOCAL_LOGIN=false leaves no way to sign in: set SPARQ_OIDC_ISSUER too")

    @property
    def resolved_database_url(self) -> str:
        """The real URL, password included: for opening the database only, never for printing."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'sparq.db').resolve()}"

    @property
    def index_dir(self) -> Path:
        """Where the FAISS index and its files live inside the data dir."""
        return self.data_dir / "index"

    @property
    def models_dir(self) -> Path:
        """Where built and downloaded models live inside the data dir."""
        return self.data_dir / "models"
