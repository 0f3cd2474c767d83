"""The one configuration model of symoe, composed from the sections each package owns
(``agents.pool.ExpertSpec``, ``agents.embedder.EmbeddingConfig``, ``skills.config.SkillsConfig``)
and the orchestrator's own (recruit, retrieval, ...), with offline defaults.

Sources, highest first: keyword arguments, ``SYMOE_*`` environment variables (nested with
``__``, e.g. ``SYMOE_ROUTER__K=2``), a YAML or TOML file (``--config`` or ``SYMOE_CONFIG``),
then the defaults, which describe the offline pool in ``agents/default_pool.yaml``.
A file's ``experts:`` mapping is merged into the default pool by name; ``replace_pool: true``
replaces the pool instead.
"""

from __future__ import annotations

import os
import re
import tomllib
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from agents.embedder import EmbeddingConfig
from agents.errors import SymoeError
from agents.paths import default_home
from agents.pool import ExpertSpec, ModelFileError, resolve_uses
from agents.registry import RegistryError
from orchestrator.executor import ExecutorConfig
from orchestrator.expert_methods import SandboxConfig, expert_methods
from orchestrator.records import RetrievalMode
from orchestrator.server.config import ServerConfig
from skills.config import SkillsConfig


class ConfigError(SymoeError):
    """The configuration file or environment is malformed."""


def default_pool() -> dict[str, ExpertSpec]:
    text = resources.files("agents").joinpath("default_pool.yaml").read_text()
    return {name: ExpertSpec(name=name, **spec) for name, spec in yaml.safe_load(text).items()}


MAX_K = 16
MAX_SEED = 2**31 - 1


class RecruitConfig(BaseModel):
    """How many experts the ``symoe`` router recruits for a query and how they are drawn
    (``recruit:``; its old name ``router:`` works one more release)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(default=3, ge=1, le=MAX_K)
    adaptive_k: bool = True
    min_k: int = Field(default=1, ge=1, le=MAX_K)
    max_k: int = Field(default=4, ge=1, le=MAX_K)
    temperature: float = Field(default=0.5, gt=0.0, le=10.0, description="global-strength temperature")
    allow_samples: bool = True
    sample_temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    dominance: float = Field(default=0.8, gt=0.0, le=1.0)
    profile: Path | None = None

    @model_validator(mode="after")
    def _check_k(self) -> RecruitConfig:
        if self.min_k > self.max_k:
            raise ValueError(f"min_k ({self.min_k}) must not exceed max_k ({self.max_k})")
        return self


RouterConfig = RecruitConfig  # the old name, one more release


class ClusterConfig(BaseModel):
    """The ``clusters`` method: k-means over the profile's questions (``clusters:``)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=6, ge=1, le=256, description="k-means clusters (fewer when there are few examples)")
    k: int = Field(default=1, ge=1, le=16, description="experts per query: the cluster's top k, voted when more")
    prior: float = Field(default=2.0, ge=0.0, description="pseudo-questions of overall accuracy added per cluster")
    iterations: int = Field(default=25, ge=1, le=500)


class CascadeConfig(BaseModel):
    """The ``cascade`` method: cheap experts first, the routed team when they disagree (``cascade:``)."""

    model_config = ConfigDict(extra="forbid")

    first: int = Field(default=2, ge=2, le=4, description="cheapest competent experts asked first; they must agree")
    min_accuracy: float = Field(default=0.3, ge=0.0, le=1.0,
                                description="validation accuracy on the query's skills an expert needs to go first")
    min_precision: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="share of the profile's questions the first experts agreed on that they got right, needed to "
                    "go first; unset: the best single expert's overall validation accuracy")
    min_agreements: int = Field(default=5, ge=1, description="validation agreements (or accepted answers) that "
                                                              "precision must rest on")
    signal: Literal["auto", "margin", "agreement"] = Field(
        default="auto", description="what accepts the first answers: margin (one cheap expert's letter, sure enough), "
                                    "agreement (the first experts agree); auto: margin on options where it qualifies")
    margin: float | None = Field(
        default=None, ge=0.0, description="accept a first letter whose log-prob margin over the next option is at "
                                          "least this; unset: calibrated on the profile (min_precision)")


class BudgetConfig(BaseModel):
    """The ``budget`` method: one cost/quality knob over cluster routing (``budget:``)."""

    model_config = ConfigDict(extra="forbid")

    quality: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="0 the cheapest expert ... 1 the most accurate option whatever it costs; unset: the profile's "
                    "calibrated value (`symoe profile calibrate`), else 1")
    team: int = Field(default=3, ge=1, le=MAX_K, description="the largest vote of a cluster's top experts considered")
    sure_first: bool = Field(default=True, description="also offer each option sure-first: a cheap expert's letter "
                                                       "stands when its margin passes, the option answers otherwise")


class LearnedConfig(BaseModel):
    """The ``learned:NAME`` routers (``learned:``)."""

    model_config = ConfigDict(extra="forbid")

    cost_weight: float = Field(
        default=0.0, ge=0.0, le=100.0,
        description="trade predicted accuracy for cost: each expert's score less cost_weight x its validation cost "
                    "per question (USD where recorded, else tokens) over the dearest expert's (0: the best-scored "
                    "expert whatever it costs; sweep it for a cost/quality curve: APGR, CPT, AIQ)")


class RetrievalConfig(BaseModel):
    """Whether and what to retrieve (``retrieval:``)."""

    model_config = ConfigDict(extra="forbid")

    mode: RetrievalMode = "auto"
    index: Path | None = None  # index folder; default <home>/index/corpus
    top_k: int = Field(default=3, ge=1, le=50)
    gate: Path | None = None  # calibrated gate JSON; default <home>/gate.json, else the shipped one


class SymoeConfig(BaseSettings):
    """Everything symoe needs to run; every field has an offline default."""

    model_config = SettingsConfigDict(env_prefix="SYMOE_", env_nested_delimiter="__", extra="forbid",
                                      env_ignore_empty=True)  # SYMOE_X= (empty) is the same as unset

    home: Path = Field(default_factory=default_home)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    default_expert: str = "qwen-coder-1.5b"
    experts: dict[str, ExpertSpec] = Field(default_factory=default_pool)
    replace_pool: bool = False
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    skills: SkillsConfig = Field(default_factory=SkillsConfig)
    recruit: RecruitConfig = Field(default_factory=RecruitConfig)
    #: the old name of ``recruit`` (read one more release, with a deprecation line); after
    #: validation it is the same object as ``recruit``
    router: RecruitConfig | None = Field(default=None, exclude=True, repr=False,
                                         description="deprecated: recruit")
    clusters: ClusterConfig = Field(default_factory=ClusterConfig)
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    learned: LearnedConfig = Field(default_factory=LearnedConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)

    @field_validator("home", mode="before")
    @classmethod
    def _home_default(cls, value: Any) -> Any:
        return default_home() if value is None or (isinstance(value, str) and not value.strip()) else value

    @field_validator("home")
    @classmethod
    def _home_directory(cls, value: Path) -> Path:
        home = value.expanduser()
        for candidate in (home, *home.parents):  # the nearest existing ancestor must be a directory
            if candidate.exists():
                if not candidate.is_dir():
                    what = f"{home}" if candidate == home else f"{home}: {candidate}"
                    raise ValueError(f"{what} is not a directory; point SYMOE_HOME (or home:) at a directory")
                break
        return home

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        """``router:`` (file, ``SYMOE_ROUTER*``, keyword) is ``recruit:`` under its old name."""
        if isinstance(data, dict) and data.get("router") is not None:
            warnings.warn("the config section router: is deprecated and goes in the next release; use recruit: "
                          "(SYMOE_RECRUIT__K, ...)", FutureWarning, stacklevel=2)
            old = data["router"]
            new = data.get("recruit")
            if isinstance(old, dict) and isinstance(new, dict | None):
                data = {**data, "recruit": {**(new or {}), **old}}
            elif new is None:
                data = {**data, "recruit": old}
            data = {k: v for k, v in data.items() if k != "router"}
        return data

    @model_validator(mode="after")
    def _check(self) -> SymoeConfig:
        self.router = self.recruit  # old code reading config.router sees the same settings
        for name, spec in self.experts.items():
            spec.name = name
        if not self.experts:
            raise ValueError("the expert pool is empty")
        try:
            self.experts = resolve_uses(self.experts)
        except ModelFileError as exc:
            raise ValueError(str(exc)) from None
        for name, spec in self.experts.items():
            if spec.method not in expert_methods:
                unknown = RegistryError("expert method", spec.method, expert_methods.names())
                raise ValueError(f"expert {name!r}: {unknown}")
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

    @property
    def routing_pool(self) -> list[str]:
        """The experts routing recruits and ``symoe eval`` compares: ``routed`` ones, less
        those whose method runs code while the sandbox is off."""
        return [name for name, spec in self.experts.items()
                if spec.routed and (self.sandbox.enabled or not expert_methods.get(spec.method).runs_code)]

    def expert(self, name: str) -> ExpertSpec:
        try:
            return self.experts[name]
        except KeyError:
            raise ConfigError(
                f"unknown expert {name!r}; the pool has: {', '.join(self.experts)}"
            ) from None

    def with_bulk(self, n: int) -> SymoeConfig:
        """This config with every llama.cpp model decoding ``n`` sequences together
        (``params.bulk``; bulk work: ``matrix build``, ``profile build``). A config that
        already sets an entry's ``bulk`` keeps it; 1 leaves the config as it is."""
        if n <= 1:
            return self
        experts = {name: spec.model_copy(update={"params": {"bulk": n, **spec.params}})
                   if spec.backend == "llamacpp" else spec for name, spec in self.experts.items()}
        return self.model_copy(update={"experts": experts})

    def public_dict(self) -> dict[str, Any]:
        """The effective config as plain JSON-able data (for output records)."""
        return self.model_dump(mode="json")


_CONFIG_FILE: Path | None = None


def decode_utf8(data: bytes, what: str) -> str:
    """``data`` as text; bytes that are not UTF-8 raise one line naming ``what``, the line and the byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{what} is not valid UTF-8 (line {line}, byte {exc.start}); save it as UTF-8") from None


def _check_environment() -> None:
    """Every ``SYMOE_*`` variable must be UTF-8 text (the OS hands undecodable bytes on as surrogates)."""
    for name, value in os.environ.items():
        if not name.upper().startswith("SYMOE_"):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            offset = len(value[: exc.start].encode("utf-8", "surrogateescape"))
            raise ConfigError(f"environment variable {name} is not valid UTF-8 (byte {offset})") from None


def _syntax_error(exc: Exception) -> str:
    """' at line N: reason' of a YAML or TOML parse error (what the parser says, on one line)."""
    if isinstance(exc, tomllib.TOMLDecodeError):
        found = re.search(r"\(at line (\d+), column \d+\)|\(at end of document\)", str(exc))
        reason = str(exc)[: found.start()].strip() if found else str(exc)
        line = f" at line {found.group(1)}" if found and found.group(1) else ""
    else:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        reason = str(getattr(exc, "problem", "") or "")
    reason = " ".join(reason.split())
    return f"{line}: {reason}" if reason else line


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML or TOML config file, merging its experts into the default pool."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    text = decode_utf8(raw, f"config file {path}")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:] or 'YAML'}{_syntax_error(exc)}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to read") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings at the top level")
    experts = data.get("experts")
    if experts is not None:
        if not isinstance(experts, dict):
            raise ConfigError(f"config file {path}: `experts` must map names to settings")
        pool: dict[str, Any] = (
            {} if data.get("replace_pool") else {n: s.model_dump(exclude_unset=True) for n, s in default_pool().items()}
        )
        removed = set()
        for name, spec in experts.items():
            if spec is None:
                pool.pop(name, None)
                removed.add(name)
            elif name in pool and isinstance(spec, dict):
                pool[name] = {**pool[name], **spec}
            else:
                pool[name] = spec
        # removing a model removes the experts that use it (its methods), unless the file names them
        data["experts"] = {n: s for n, s in pool.items()
                           if not (isinstance(s, dict) and s.get("uses") in removed and n not in experts)}
    return data


class _FileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _CONFIG_FILE or (Path(os.environ["SYMOE_CONFIG"]) if os.environ.get("SYMOE_CONFIG") else None)
        return read_config_file(path) if path else {}


def allowed_range(loc: tuple[int | str, ...]) -> str:
    """'from 1 to 16', 'more than 0 and at most 10', ...: the bounds of the numeric setting at ``loc``; '' if none."""
    model: Any = SymoeConfig
    field = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return ""
        field = model.model_fields.get(str(part))
        if field is None:
            return ""
        model = field.annotation
        args = [a for a in get_args(model) if isinstance(a, type) and issubclass(a, BaseModel)]
        if args:  # dict[str, ExpertSpec], Model | None: the model inside
            model = args[0]
    if field is None:
        return ""
    bounds = {kind: getattr(m, kind) for m in field.metadata for kind in ("gt", "ge", "lt", "le")
              if type(m).__name__ == kind.title() and getattr(m, kind, None) is not None}  # annotated_types.Ge, ...
    if "ge" in bounds and "le" in bounds:
        return f"from {_number(bounds['ge'])} to {_number(bounds['le'])}"
    words = {"gt": "more than", "ge": "at least", "lt": "less than", "le": "at most"}
    return " and ".join(f"{words[k]} {_number(v)}" for k, v in bounds.items())


def invalid_value(message: str, loc: tuple[int | str, ...]) -> str:
    """A validator's message for the setting at ``loc``, with its allowed range when it has one."""
    message = message.removeprefix("Value error, ")
    bounds = allowed_range(loc)
    return f"{message} (allowed: {bounds})" if bounds else message


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def load_config(path: Path | str | None = None, **overrides: Any) -> SymoeConfig:
    """Build the effective config; raise ``ConfigError`` with one line on bad input."""
    global _CONFIG_FILE
    _CONFIG_FILE = Path(path).expanduser() if path else None
    try:
        _check_environment()
        return SymoeConfig(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = " at " + ".".join(str(p) for p in first["loc"]) if first["loc"] else ""
        message = invalid_value(str(first["msg"]), tuple(first["loc"]))
        file = _CONFIG_FILE or os.environ.get("SYMOE_CONFIG")
        origin = f" (config file {file} or SYMOE_* variables)" if file else " (SYMOE_* variables)"
        raise ConfigError(f"invalid configuration{where}: {message}{origin}") from None
    except SettingsError as exc:  # a SYMOE_<SECTION> variable that is not JSON
        found = re.search(r'field "([^"]+)"', str(exc))
        name = f"SYMOE_{found.group(1).upper()}" if found else "a SYMOE_* variable"
        raise ConfigError(f"environment variable {name} is not a valid JSON object; give JSON "
                          f"(e.g. SYMOE_RECRUIT='{{\"k\": 2}}') or set one key (e.g. SYMOE_RECRUIT__K=2)") from None
    finally:
        _CONFIG_FILE = None
