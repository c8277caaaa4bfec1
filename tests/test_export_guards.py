"""The exporter refuses what would crash, hang or silently differ: a lying safetensors header, a
config outside the architecture's ranges, and a GGUF tokenizer that splits text differently from
the checkpoint's own."""
import json
import shutil
import subprocess
import sys
import time

import pytest

from mivl.edge.errors import CheckpointError, ValidationError
from mivl.export.checkpoint import load_checkpoint


def _copy(tiny_dir, tmp_path, family="qwen2"):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_dir(family), dst)
    return dst


def _edit_config(path, where, key, value):
    cfg = json.loads((path / "config.json").read_text())
    (cfg[where] if where else cfg)[key] = value
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("where,key,value,words", [
    ("llm_config", "num_attention_heads", 0, "num_attention_heads is 0"),
    ("vision_config", "num_attention_heads", 0, "num_attention_heads is 0"),
    ("vision_config", "patch_size", 0, "patch_size is 0"),
    ("llm_config", "num_hidden_layers", 10 ** 6, "num_hidden_layers is 1000000"),
    ("vision_config", "num_hidden_layers", 10 ** 6, "num_hidden_layers is 1000000"),
    ("llm_config", "hidden_size", "64", "hidden_size is '64'"),
    ("llm_config", "rms_norm_eps", -1.0, "rms_norm_eps"),
    ("vision_config", "image_size", 450, "not a multiple of patch_size"),
    ("llm_config", "num_key_value_heads", 3, "not a multiple of num_key_value_heads"),
    (None, "max_dynamic_patch", 0, "max_dynamic_patch is 0"),
    (None, "downsample_ratio", 0.3, "downsample_ratio"),
])
def test_config_out_of_range_is_refused_by_key(tiny_dir, tmp_path, where, key, value, words):
    path = _copy(tiny_dir, tmp_path)
    _edit_config(path, where, key, value)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(path)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("damage", ["header-length", "header-json", "offsets", "truncated"])
def test_lying_safetensors_is_a_checkpoint_error(tiny_dir, tmp_path, damage):
    path = _copy(tiny_dir, tmp_path)
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    n = int.from_bytes(data[:8], "little")
    if damage == "header-length":
        data[:8] = (len(data) * 4).to_bytes(8, "little")
    elif damage == "header-json":
        data[8:12] = b"{{{{"
    elif damage == "offsets":
        header = json.loads(data[8:8 + n])
        name = next(k for k in header if k != "__metadata__")
        header[name]["data_offsets"] = [0, 10 ** 12]          # points far past the end of the file
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        data = bytearray(len(blob).to_bytes(8, "little") + blob + bytes(data[8 + n:]))
    else:
        data = data[: 8 + n + 100]
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        load_checkpoint(path)


def test_cli_prints_the_error_not_a_traceback(tiny_dir, tmp_path):
    path = _copy(tiny_dir, tmp_path)
    _edit_config(path, "llm_config", "num_attention_heads", 0)
    p = subprocess.run([sys.executable, "-m", "mivl.export.cli", str(path), "-o", str(tmp_path / "b")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "num_attention_heads is 0" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_tokenizer_parity_fails_a_non_identity_normaliser(tiny_dir, tmp_path):
    """SentencePiece's nmt_nfkc rule turns '\\n' into a space; llama.cpp does not normalise: the
    GGUF would tokenise prompts differently, and validation must say so, naming a string."""
    from mivl.export.api import export
    from mivl.export.tiny_tokenizer import write_spm_tokenizer

    path = _copy(tiny_dir, tmp_path, "phi3")
    write_spm_tokenizer(path, "phi3", seed=0, normalization="nmt_nfkc")
    with pytest.raises(ValidationError, match="tokenizer differs from the checkpoint's"):
        export(path, tmp_path / "bundle", precision="fp32", quiet=True, calib_size=4)


KILL_SWAP = r'''
import os, signal, sys, pathlib
from mivl.export.api import export
real = pathlib.Path.rename
def rename(self, target):
    if ".partial-" in self.name:                 # the new bundle about to move in: die first
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, target)
pathlib.Path.rename = rename
export(sys.argv[1], sys.argv[2], precision="fp32", quiet=True, force=True)
'''


def test_export_killed_mid_replacement_is_recovered(tiny_dir, bundle_dir, tmp_path):
    from mivl.edge import Session
    from mivl.edge.bundle import open_bundle
    from mivl.export.api import export

    out = tmp_path / "bundle"
    shutil.copytree(bundle_dir("qwen2", "fp32"), out)
    before = (out / "manifest.json").read_bytes()
    p = subprocess.run([sys.executable, "-c", KILL_SWAP, str(tiny_dir("qwen2")), str(out)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-1000:]
    assert not out.exists()                                   # killed between the two renames
    assert list(tmp_path.glob(".bundle.old-*")) and list(tmp_path.glob(".bundle.partial-*"))
    open_bundle(out)                                          # the runtime puts the old bundle back
    assert (out / "manifest.json").read_bytes() == before
    with Session(out, device="cpu") as s:
        assert s.ask("Hi", max_new_tokens=1).token_ids
    export(tiny_dir("qwen2"), out, precision="fp32", quiet=True, force=True)   # cleans the killed one's leftovers
    assert not list(tmp_path.glob(".bundle.partial-*")) and not list(tmp_path.glob(".bundle.old-*"))


def test_bundle_has_ordinary_permissions(bundle_dir):
    """Written with the umask (mkdtemp's 0700 would hide it from a service account)."""
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    b = bundle_dir("qwen2", "fp32")
    assert stat.S_IMODE(b.stat().st_mode) == 0o777 & ~umask
    for f in b.rglob("*"):
        assert stat.S_IMODE(f.stat().st_mode) & 0o444 == 0o444 & ~umask, f
