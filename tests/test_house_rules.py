"""The house rules CONTRIBUTING.md states that a machine can check: no function in the library
and its tools (``specvlm/``) longer than 80 lines, docstring included."""

import ast
from pathlib import Path

LIMIT = 80
PACKAGE = Path(__file__).resolve().parent.parent / "specvlm"


def test_no_function_over_80_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}")
    assert not long, f"functions over {LIMIT} lines: {long}"


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    tree = ast.parse(f"def f():\n{body}\n")
    node = tree.body[0]
    assert node.end_lineno - node.lineno + 1 > LIMIT
