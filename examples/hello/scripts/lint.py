"""A small stdlib-only linter: syntax, unused imports, line length, whitespace.

Usage: python3 scripts/lint.py DIR... ; prints path:line:col: CODE message and exits 1 on findings.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_LINE = 100


def check(path: Path) -> list[str]:
    text = path.read_text()
    out = []
    try:
        tree = ast.parse(text, str(path))
    except SyntaxError as e:
        return [f"{path}:{e.lineno}:{e.offset}: E999 {e.msg}"]
    imported: dict[str, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                name = (alias.asname or alias.name).split(".")[0]
                if name != "annotations":
                    imported[name] = node
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {
        n.value.id for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    }
    exported = "__all__" in text
    for name, node in sorted(imported.items(), key=lambda kv: kv[1].lineno):
        if name not in used and not exported and path.name != "__init__.py":
            where = f"{path}:{node.lineno}:{node.col_offset + 1}"
            out.append(f"{where}: F401 '{name}' imported but unused")
    for i, line in enumerate(text.splitlines(), 1):
        if len(line) > MAX_LINE:
            out.append(f"{path}:{i}:{MAX_LINE + 1}: E501 line too long ({len(line)} > {MAX_LINE})")
        if line != line.rstrip():
            out.append(f"{path}:{i}:{len(line.rstrip()) + 1}: W291 trailing whitespace")
        if "\t" in line:
            out.append(f"{path}:{i}:{line.index(chr(9)) + 1}: W191 tab character")
    return out


def main(argv: list[str]) -> int:
    findings = []
    files = 0
    for root in argv or ["."]:
        for path in sorted(Path(root).rglob("*.py")):
            files += 1
            findings += check(path)
    for f in findings:
        print(f)
    print(f"lint: {files} file(s), {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
