"""The one configuration model of symoe, composed from the sections each package owns
(``agents.pool.ExpertSpec``, ``agents.embedder.EmbeddingConfig``, ``skills.config.SkillsConfig``)
and the orchestrator's own (router, retrieval), with offline defaults.

Sources, highest first: keyword arguments, ``SYMOE_*`` environment variables (nested with
``__``, e.g. ``SYMOE_ROUTER__K=2``), a YAML or TOML file (``--config`` or ``SYMOE_CONFIG``),
then the defaults, which describe the offline pool in ``agents/default_pool.yaml``.
A file's ``experts:`` mapping is merged into the default pool by name; ``replace_pool: true``
replaces the pool instead.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agents.embedder import EmbeddingConfig
from agents.errors import SymoeError
from agents.paths import default_home
from agents.pool import ExpertSpec
from orchestrator.records import RetrievalMode
from skills.config import SkillsConfig


class ConfigError(SymoeError):
    """The configuration file or environment is malformed."""


def default_pool() -> dict[str, ExpertSpec]:
    text = resources.files("agents").joinpath("default_pool.yaml").read_text()
    return {name: ExpertSpec(name=name, **spec) for name, spec in yaml.safe_load(text).items()}


MAX_K = 16


class RouterConfig(BaseModel):
    """How many experts a query recruits and how they are drawn (``router:``)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(3, ge=1, le=MAX_K)
    adaptive_k: bool = True
    min_k: int = Field(1, ge=1, le=MAX_K)
    max_k: int = Field(4, ge=1, le=MAX_K)
    temperature: float = Field(0.5, gt=0.0, le=10.0, description="global-strength temperature")
    allow_samples: bool = True
    sample_temperature: float = Field(0.7, ge=0.0, le=2.0)
    dominance: float = Field(0.8, gt=0.0, le=1.0)
    profile: Path | None = None


class RetrievalConfig(BaseModel):
    """Whether and what to retrieve (``retrieval:``)."""

    model_config = ConfigDict(extra="forbid")

    mode: RetrievalMode = "auto"
    index: Path | None = None  # index folder; default <home>/index/corpus
    top_k: int = Field(3, ge=1, le=50)
    gate: Path | None = None  # calibrated gate JSON; default <home>/gate.json, else the shipped one


class SymoeConfig(BaseSettings):
    """Everything symoe needs to run; every field has an offline default."""

    model_config = SettingsConfigDict(env_prefix="SYMOE_", env_nested_delimiter="__", extra="forbid")

    home: Path = Field(default_factory=default_home)
    seed: int = 0
    default_expert: str = "qwen-coder-1.5b"
    experts: dict[str, ExpertSpec] = Field(default_factory=default_pool)
    replace_pool: bool = False
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    skills: SkillsConfig = Field(default_factory=SkillsConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)

    @model_validator(mode="after")
    def _check(self) -> SymoeConfig:
        for name, spec in self.experts.items():
            spec.name = name
        if not self.experts:
            raise ValueError("the expert pool is empty")
        if self.default_expert not in self.experts:
            raise ValueError(
                f"default_expert {self.default_expert!r} is not in the pool "
                f"({', '.join(self.experts)})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))

    def expert(self, name: str) -> ExpertSpec:
        try:
            return self.experts[name]
        except KeyError:
            raise ConfigError(
                f"unknown expert {name!r}; the pool has: {', '.join(self.experts)}"
            ) from None

    def public_dict(self) -> dict[str, Any]:
        """The effective config as plain JSON-able data (for output records)."""
        return self.model_dump(mode="json")


_CONFIG_FILE: Path | None = None


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML or TOML config file, merging its experts into the default pool."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:] or 'YAML'}{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings at the top level")
    experts = data.get("experts")
    if experts is not None:
        if not isinstance(experts, dict):
            raise ConfigError(f"config file {path}: `experts` must map names to settings")
        pool: dict[str, Any] = (
            {} if data.get("replace_pool") else {n: s.model_dump() for n, s in default_pool().items()}
        )
        for name, spec in experts.items():
            if spec is None:
                pool.pop(name, None)
            elif name in pool and isinstance(spec, dict):
                pool[name] = {**pool[name], **spec}
            else:
                pool[name] = spec
        data["experts"] = pool
    return data


class _FileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _CONFIG_FILE or (Path(os.environ["SYMOE_CONFIG"]) if os.environ.get("SYMOE_CONFIG") else None)
        return read_config_file(path) if path else {}


def load_config(path: Path | str | None = None, **overrides: Any) -> SymoeConfig:
    """Build the effective config; raise ``ConfigError`` with one line on bad input."""
    global _CONFIG_FILE
    _CONFIG_FILE = Path(path).expanduser() if path else None
    try:
        return SymoeConfig(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        file = _CONFIG_FILE or os.environ.get("SYMOE_CONFIG")
        origin = f" (config file {file} or SYMOE_* variables)" if file else " (SYMOE_* variables)"
        raise ConfigError(f"invalid configuration at {where}: {first['msg']}{origin}") from None
    finally:
        _CONFIG_FILE = None
