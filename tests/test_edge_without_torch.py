"""The device side must run with no torch, transformers or mivl.export installed."""
import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('torch', 'transformers', 'torchvision') or name.startswith('mivl.export'):
                raise ImportError('blocked: ' + name)
    sys.meta_path.insert(0, Block())
""")


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


def test_import_edge_and_runtimes_without_torch():
    r = run("""
        import mivl.edge, mivl.runtimes
        import mivl.edge.preprocess, mivl.edge.multiview, mivl.edge.prompt, mivl.edge.video
        import sys
        assert not any(m.split('.')[0] == 'torch' for m in sys.modules), 'torch got imported'
        print('ok')
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_preprocessing_runs_without_torch():
    r = run("""
        import numpy as np
        from mivl.edge.preprocess import preprocess_image
        from mivl.edge.multiview import CAMERAS, stitch_cameras
        b = preprocess_image(np.zeros((480, 640, 3), np.uint8))
        c = stitch_cameras({k: np.zeros((900, 1600, 3), np.uint8) for k in CAMERAS})
        print(b.pixels.shape, c.shape)
    """)
    assert r.returncode == 0, r.stderr
    assert "(13, 3, 448, 448) (896, 2688, 3)" in r.stdout


def test_the_blocker_really_blocks():
    r = run("import torch")
    assert r.returncode != 0 and "blocked: torch" in r.stderr


def test_runtimes_never_import_edge():
    """mivl.edge imports mivl.runtimes, never the reverse: the backends import nothing of the edge
    package, at module level or inside a function (read from the source, every file)."""
    import ast
    from pathlib import Path

    import mivl.runtimes

    root = Path(mivl.runtimes.__file__).parent
    offenders = []
    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = "." * node.level + (node.module or "")
                depth = len(f.relative_to(root).parts)            # levels up to mivl/
                if (node.level == 0 and (node.module or "").startswith("mivl.edge")) or \
                        (node.level == depth + 1 and (node.module or "").split(".")[0] == "edge"):
                    offenders.append(f"{f.relative_to(root)}: from {mod} import ...")
            elif isinstance(node, ast.Import):
                offenders += [f"{f.relative_to(root)}: import {a.name}" for a in node.names
                              if a.name.startswith("mivl.edge")]
    assert not offenders, offenders
    r = run("import mivl.runtimes.backends, mivl.runtimes.llm_ort, mivl.runtimes.vision_split, "
            "mivl.runtimes.tensorrt_engine, sys; print(sorted(m for m in sys.modules if m.startswith('mivl.edge')))")
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)
