"""Nothing the package does may unpickle what a user hands it."""

import ast
from pathlib import Path

import mrp_gpu

HERE = Path(mrp_gpu.__file__).parent
ROOTS = [HERE, HERE.parent / "kernels", HERE.parent / "benchmarks"]
UNSAFE_MODULES = ("pickle", "dill", "cloudpickle", "marshal", "shelve")


def offenders(files) -> list[str]:
    """Unsafe deserialisation in ``files``: pickle-like imports, torch.load without weights_only=True."""
    found = []
    for path in files:
        tree = ast.parse(Path(path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in UNSAFE_MODULES for n in names):
                    found.append(f"{path}:{node.lineno}: imports {names}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = getattr(node.func.value, "id", "")
                if owner == "torch" and node.func.attr == "load":
                    kw = {k.arg: k.value for k in node.keywords}
                    safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                    if not safe:
                        found.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
                if owner in ("np", "numpy") and node.func.attr == "load":
                    kw = {k.arg: k.value for k in node.keywords}
                    if isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is True:
                        found.append(f"{path}:{node.lineno}: numpy.load(allow_pickle=True)")
    return found


def test_no_unsafe_deserialisation_anywhere():
    files = [p for root in ROOTS if root.is_dir() for p in root.rglob("*.py")]
    assert len(files) > 20
    assert offenders(files) == []


def test_the_check_can_fire(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch, numpy as np\nimport pickle\nfrom dill import loads\n"
                   "a = torch.load('f.pt')\nb = torch.load('f.pt', weights_only=False)\n"
                   "c = np.load('x.npy', allow_pickle=True)\nd = torch.load('f.pt', weights_only=True)\n")
    found = offenders([bad])
    assert len(found) == 5, found  # two imports, two torch.load, one np.load; the safe call passes
