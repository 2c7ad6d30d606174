"""Hostile inputs shared by tests and benchmarks (issue 13)."""

from __future__ import annotations


def alias_bomb(levels: int = 9, fanout: int = 9, key: str = "ci") -> str:
    """A "billion laughs" YAML document of a few hundred bytes: ``fanout ** levels`` nodes once
    its aliases are expanded (9 ** 9 = 387 million). The last level sits under ``key`` so the
    document also looks like a pipeline file."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]")
    lines.append(f"{key}: [{', '.join([f'*l{levels - 1}'] * fanout)}]")
    return "\n".join(lines) + "\n"


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth
