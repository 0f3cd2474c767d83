"""The pool as data: model files from packages, prepared and hash-checked offline; the config.

A user-defined expert here ships its model (a copy of SmolLM2-135M split in two parts) in a
package made on the fly under ``tmp_path``, exactly as the default pool's experts do.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
from pathlib import Path

import pytest

from agents.backends import GenerationRequest
from agents.pool import ExpertSpec, ModelFileError, ModelSource, ensure_ready, prepare, status, verify
from agents.runtime import build_backend
from orchestrator.config import ConfigError, default_pool, load_config


def _smollm2_file() -> Path:
    spec = default_pool()["smollm2-135m"]
    path = spec.model_file(Path("/nonexistent"))  # package_file: the home plays no part
    assert path is not None and path.exists(), f"{path}: pip install {' '.join(spec.source.pip)}"  # type: ignore[union-attr]
    return path


@pytest.fixture(scope="module")
def parts_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelSource]:
    """A package ``symoe_test_parts`` holding a GGUF in two raw parts, and its source entry."""
    gguf = _smollm2_file()
    root = tmp_path_factory.mktemp("site")
    data = root / "symoe_test_parts" / "data"
    data.mkdir(parents=True)
    (root / "symoe_test_parts" / "__init__.py").write_text("")
    blob = gguf.read_bytes()
    half = len(blob) // 2
    (data / "part01.bin").write_bytes(blob[:half])
    (data / "part02.bin").write_bytes(blob[half:])
    source = ModelSource(kind="package_parts", package="symoe_test_parts", sha256=hashlib.sha256(blob).hexdigest(),
                         size=len(blob), pip=["symoe-test-parts==1.0"],
                         files=["symoe_test_parts/data/part01.bin", "symoe_test_parts/data/part02.bin"])
    return root, source


@pytest.fixture
def user_expert(parts_package: tuple[Path, ModelSource], monkeypatch: pytest.MonkeyPatch) -> ExpertSpec:
    root, source = parts_package
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    return ExpertSpec(name="my-smol", backend="llamacpp", source=source)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("SYMOE_HOME", str(home))
    return home


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


# ------------------------------------------------------------- files and status


@pytest.mark.real
def test_prepare_assembles_verifies_and_the_expert_answers(user_expert: ExpertSpec, home: Path) -> None:
    assert status(user_expert, home) == "missing"  # package installed, file not assembled yet
    seen: list[tuple[int, int]] = []
    path = prepare(user_expert, home, lambda done, total: seen.append((done, total)))
    assert path == home / "models" / "my-smol.gguf"
    assert path.stat().st_size == user_expert.source.size  # type: ignore[union-attr]
    assert seen and seen[-1][0] == seen[-1][1] == 2 * path.stat().st_size  # copy + hash
    assert status(user_expert, home) == "ready"
    assert (home / "models" / "my-smol.verified.json").exists()
    mtime = path.stat().st_mtime_ns
    assert prepare(user_expert, home) == path and path.stat().st_mtime_ns == mtime  # done once
    backend = build_backend(user_expert, home)
    with backend:
        (g,) = backend.generate([GenerationRequest.user("Which city is the capital of France?", max_tokens=16)])
    assert "paris" in g.text.lower()


def test_corrupt_file_is_reported_corrupt(user_expert: ExpertSpec, home: Path) -> None:
    path = prepare(user_expert, home)
    assert path is not None and status(user_expert, home) == "ready"
    with open(path, "r+b") as handle:  # same size, one byte changed
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert status(user_expert, home) == "unverified"  # changed since it was hashed
    with pytest.raises(ModelFileError) as caught:
        verify(user_expert, home)
    message = _one_line(caught.value)
    assert "corrupt" in message and "symoe models prepare" in message
    assert status(user_expert, home) == "corrupt"  # the failed check is remembered
    with pytest.raises(ModelFileError, match="corrupt"):
        ensure_ready(user_expert, home)
    path.unlink()  # what the message says to do
    assert ensure_ready(user_expert, home) == path and status(user_expert, home) == "ready"


def test_wrong_size_is_corrupt_without_hashing(user_expert: ExpertSpec, home: Path) -> None:
    path = prepare(user_expert, home)
    assert path is not None
    with open(path, "r+b") as handle:
        handle.truncate(1000)
    assert status(user_expert, home) == "corrupt"
    with pytest.raises(ModelFileError, match="has 1000 bytes, expected"):
        verify(user_expert, home)


def test_package_not_installed(home: Path) -> None:
    source = ModelSource(kind="package_parts", sha256="0" * 64, pip=["no-such-model-pkg==1.0"],
                         files=["no_such_model_pkg/data/part01.bin"])
    spec = ExpertSpec(name="ghost", source=source)
    assert status(spec, home) == "not installed"
    with pytest.raises(ModelFileError) as caught:
        ensure_ready(spec, home)
    assert "no_such_model_pkg" in _one_line(caught.value)


def test_missing_part_names_the_pip_package(user_expert: ExpertSpec, home: Path) -> None:
    source = user_expert.source.model_copy(update={"files": [*user_expert.source.files,  # type: ignore[union-attr]
                                                             "symoe_test_parts/data/part03.bin"]})
    spec = user_expert.model_copy(update={"source": source})
    with pytest.raises(ModelFileError) as caught:
        prepare(spec, home)
    message = _one_line(caught.value)
    assert "part03.bin" in message and "pip install symoe-test-parts==1.0" in message
    assert not (home / "models" / "my-smol.gguf").exists()


def test_local_files(tmp_path: Path, home: Path) -> None:
    copy = tmp_path / "mine.gguf"
    shutil.copyfile(_smollm2_file(), copy)
    mine = ExpertSpec(name="mine", path=copy)  # a user's own file: nothing to hash against
    assert status(mine, home) == "ready" and ensure_ready(mine, home) == copy
    gone = ExpertSpec(name="gone", path=tmp_path / "gone.gguf")
    assert status(gone, home) == "missing"
    with pytest.raises(ModelFileError) as caught:
        ensure_ready(gone, home)
    assert "does not exist" in _one_line(caught.value)
    # a local copy checked against the package's hash: a corrupt copy is found
    pinned = ExpertSpec(name="pinned", path=copy, source=default_pool()["smollm2-135m"].source)
    assert ensure_ready(pinned, home) == copy and status(pinned, home) == "ready"
    with open(copy, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\0" * 16)
    with pytest.raises(ModelFileError, match="corrupt"):
        ensure_ready(pinned, home)
    assert status(pinned, home) == "corrupt"
    remote = ExpertSpec(name="api", backend="openai", model="gpt", base_url="http://127.0.0.1:9/v1")
    assert status(remote, home) == "remote" and ensure_ready(remote, home) is None


# ------------------------------------------------------------------- config


def test_defaults_describe_the_offline_pool(home: Path) -> None:
    cfg = load_config()
    assert list(cfg.experts) == ["qwen-coder-1.5b", "qwen-coder-0.5b", "smollm2-135m", "gemma3-270m",
                                 "qwen-1.5b-direct", "qwen-1.5b-cot", "qwen-1.5b-program", "qwen-0.5b-direct",
                                 "qwen-0.5b-program"]  # four models, then the method experts routed on two
    assert cfg.default_expert == "qwen-coder-1.5b" and cfg.home == home
    assert all(s.source is not None and len(s.source.sha256) == 64 for s in cfg.experts.values())
    assert cfg.experts["gemma3-270m"].chat_template is False


def test_three_lines_of_yaml_add_an_expert(tmp_path: Path) -> None:
    file = tmp_path / "symoe.yaml"
    file.write_text("experts:\n  my-7b:\n    path: /models/my-7b.gguf\n")
    cfg = load_config(file)
    assert list(cfg.experts)[-1] == "my-7b" and len(cfg.experts) == 10 and "my-7b" in cfg.routing_pool
    mine = cfg.experts["my-7b"]
    assert mine.name == "my-7b" and mine.backend == "llamacpp" and mine.path == Path("/models/my-7b.gguf")
    assert cfg.experts["qwen-coder-1.5b"] == default_pool()["qwen-coder-1.5b"]  # the pool is kept
    assert len(load_config().experts) == 9  # the file applied to that load only


def test_yaml_overrides_and_removes_experts_by_name(tmp_path: Path) -> None:
    file = tmp_path / "symoe.yml"
    file.write_text("experts:\n  gemma3-270m:\n    backend: transformers\n  smollm2-135m: null\n"
                    "recruit:\n  k: 2\n")
    cfg = load_config(file)
    assert "smollm2-135m" not in cfg.experts
    gemma = cfg.experts["gemma3-270m"]
    assert gemma.backend == "transformers" and gemma.chat_template is False and gemma.source is not None
    assert cfg.recruit.k == 2 and cfg.recruit.max_k == 4  # other recruit defaults stay


def test_toml_config_and_replace_pool(tmp_path: Path) -> None:
    file = tmp_path / "symoe.toml"
    file.write_text('replace_pool = true\ndefault_expert = "api"\n\n[experts.api]\nbackend = "openai"\n'
                    'model = "qwen"\nbase_url = "http://127.0.0.1:8000/v1"\n\n[recruit]\nk = 1\n')
    cfg = load_config(file)
    assert list(cfg.experts) == ["api"] and cfg.experts["api"].backend == "openai"
    assert cfg.default_expert == "api" and cfg.recruit.k == 1
    file.write_text('replace_pool = true\n[experts.api]\nbackend = "openai"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    assert "default_expert 'qwen-coder-1.5b' is not in the pool" in _one_line(caught.value)


def test_env_overrides_file_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "symoe.yaml"
    file.write_text("recruit:\n  k: 4\n  temperature: 0.2\nseed: 7\n")
    monkeypatch.setenv("SYMOE_RECRUIT__K", "2")
    monkeypatch.setenv("SYMOE_CONFIG", str(file))
    cfg = load_config()  # the file through SYMOE_CONFIG
    assert cfg.recruit.k == 2  # env beats the file
    assert cfg.recruit.temperature == 0.2 and cfg.seed == 7  # the rest of the file still applies
    monkeypatch.setenv("SYMOE_DEFAULT_EXPERT", "smollm2-135m")
    monkeypatch.setenv("SYMOE_RETRIEVAL__MODE", "always")
    cfg = load_config()
    assert cfg.default_expert == "smollm2-135m" and cfg.retrieval.mode == "always"
    assert load_config(recruit={"k": 1}).recruit.k == 1  # keyword arguments beat env
    monkeypatch.setenv("SYMOE_RECRUIT__K", "many")
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert "recruit.k" in _one_line(caught.value)


@pytest.mark.parametrize(("name", "text", "words"), [
    ("bad.yaml", "experts:\n  my-7b:\n    path: [unclosed\n", ("not valid yaml", "line")),
    ("bad.toml", "[recruit\nk = 2\n", ("not valid toml",)),
    ("list.yaml", "- a\n- b\n", ("mapping",)),
    ("extra.yaml", "routr:\n  k: 2\n", ("routr", "not permitted")),
    ("type.toml", "[recruit]\nk = \"many\"\n", ("recruit.k",)),
    ("experts.yaml", "experts: [a, b]\n", ("experts",)),
])
def test_malformed_config_is_one_line(tmp_path: Path, name: str, text: str, words: tuple[str, ...]) -> None:
    file = tmp_path / name
    file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    message = _one_line(caught.value).lower()
    assert all(w in message for w in words), message


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert "cannot read config file" in _one_line(caught.value) and "nope.yaml" in str(caught.value)


def test_unknown_expert_is_one_line(home: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config().expert("gpt-17")
    assert "unknown expert 'gpt-17'" in _one_line(caught.value) and "qwen-coder-1.5b" in str(caught.value)


def test_the_old_section_name_router_still_works_with_a_deprecation_line(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "symoe.yaml"
    file.write_text("router:\n  k: 4\n  temperature: 0.2\n")
    monkeypatch.setenv("SYMOE_ROUTER__K", "2")
    with pytest.warns(FutureWarning, match="router: is deprecated.*use recruit:"):
        cfg = load_config(file)
    assert cfg.recruit.k == 2 and cfg.recruit.temperature == 0.2  # env beats the file, as under the new name
    assert cfg.router is cfg.recruit and "router" not in cfg.public_dict()
