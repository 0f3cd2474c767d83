"""The safetensors cache shared by the engines that cannot read GGUF (transformers, vLLM).

A GGUF expert is dequantized by transformers once and saved, model and tokenizer, as a
safetensors folder under ``<home>/hf/<expert>``. A ``symoe-source.json`` stamp inside the
folder records which GGUF (file name and size) and dtype it came from; a different file or
dtype is converted again. ``home`` is ``spec.params["home"]`` (set by ``agents.runtime``),
else ``~/.cache/symoe``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from agents.backends.base import BackendError

if TYPE_CHECKING:
    from agents.pool import ExpertSpec

STAMP = "symoe-source.json"


def default_home() -> Path:
    return Path.home() / ".cache" / "symoe"


def safetensors_cache(spec: ExpertSpec) -> Path:
    """Where the converted folder of a GGUF expert lives."""
    home = Path(str(spec.params.get("home", default_home()))).expanduser()
    return home / "hf" / spec.load_as


def _source_stamp(gguf: Path, dtype: str) -> dict[str, object]:
    # File name and size, not the full path: the same package file sits in several venvs.
    return {"gguf": gguf.name, "size": gguf.stat().st_size, "dtype": dtype}


def _dequantize_kwargs() -> dict[str, object]:
    """Ask transformers (5.x, which can keep GGUF blocks packed) for a dense model to save."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantize
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def convert_gguf(gguf: Path, target: Path, dtype: str = "bfloat16") -> Path:
    """Dequantize a GGUF through transformers and save model + tokenizer as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype), **_dequantize_kwargs()
        )
        # Dequantized weights are plain tensors; the GGUF quantizer left on the model would make
        # save_pretrained refuse ("not serializable") and write a quantization_config.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        del model
        (tmp / STAMP).write_text(json.dumps(_source_stamp(gguf, dtype)))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_converted(folder: Path, gguf: Path, dtype: str) -> bool:
    """True when ``folder`` holds a finished conversion of this GGUF at this dtype."""
    stamp = folder / STAMP
    if not (folder / "config.json").exists() or not stamp.exists():
        return False
    try:
        return bool(json.loads(stamp.read_text()) == _source_stamp(gguf, dtype))
    except (OSError, ValueError):
        return False


def hf_folder(spec: ExpertSpec, dtype: str = "bfloat16") -> Path:
    """A folder transformers/vLLM can load: ``spec.path`` if it is one, else the converted GGUF."""
    if spec.path is None or not os.path.exists(spec.path):
        raise BackendError(
            f"model for expert {spec.name!r} not found ({spec.path}); run `symoe models prepare`"
        )
    path = Path(spec.path)
    if path.is_dir():
        return path
    target = safetensors_cache(spec)
    if not is_converted(target, path, dtype):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            convert_gguf(path, target, dtype)
        except ImportError as exc:
            raise BackendError(f"converting a GGUF needs transformers and gguf: pip install gguf ({exc})") from None
        except (ValueError, OSError, RuntimeError) as exc:
            raise BackendError(
                f"could not convert {path} to safetensors for expert {spec.name!r}: {exc}"
            ) from None
    return target
