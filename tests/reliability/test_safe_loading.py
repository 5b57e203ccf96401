"""Loading a workdir never runs code: no pickle, no unsafe Keras deserialisation."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tfllm"
UNSAFE = [
    (re.compile(r"\bimport pickle\b|\bfrom pickle\b|\bpickle\.loads?\("), "pickle"),
    (re.compile(r"\bimport dill\b|\bimport cloudpickle\b|\bjoblib\.load\("), "pickle-like"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy allow_pickle"),
    (re.compile(r"safe_mode\s*=\s*False"), "Keras safe_mode=False"),
    (re.compile(r"enable_unsafe_deserialization\("), "Keras unsafe deserialization"),
    # A method such as torch's `model.eval()` is not Python's eval.
    (re.compile(r"(?<![.\w])(eval|exec)\("), "eval/exec"),
]


def test_package_has_no_unsafe_loading():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for pattern, what in UNSAFE:
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {what}")
    # The one sanctioned exec: config files are Python and trusted by design
    # (docs/configuration.md); they are loaded by ml_collections / importlib.
    assert offenders == [], offenders
