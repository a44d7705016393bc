"""Reading local dataset files: ShareGPT JSON and custom JSONL. Errors name --dataset-path."""

from __future__ import annotations

from pathlib import Path

import orjson


def load_sharegpt(path: str) -> list[tuple[str, str]]:
    """(first human turn, first gpt answer) of each conversation with at least two turns.

    The file is ShareGPT's format: a JSON list of ``{"conversations": [{"from", "value"}, ...]}``.
    """
    data = _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"--dataset-path: {path} is not a JSON list of ShareGPT conversations")
    pairs = []
    for entry in data:
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            continue
        first, second = turns[0], turns[1]
        if not (isinstance(first, dict) and isinstance(second, dict)):
            continue
        prompt, answer = first.get("value"), second.get("value")
        if isinstance(prompt, str) and isinstance(answer, str):
            pairs.append((prompt, answer))
    if not pairs:
        raise ValueError(f"--dataset-path: {path} has no conversation with two turns")
    return pairs


def load_custom(path: str) -> list[tuple[str, int | None]]:
    """(prompt, output_len or None) per JSONL line ``{"prompt": str, "output_len": int}``."""
    rows: list[tuple[str, int | None]] = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"--dataset-path: {path} line {number} is not JSON: {exc}") from None
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, str):
            raise ValueError(f"--dataset-path: {path} line {number} has no string 'prompt'")
        output_len = row.get("output_len", row.get("max_tokens"))
        if output_len is not None and (not isinstance(output_len, int) or output_len < 1):
            raise ValueError(f"--dataset-path: {path} line {number}: output_len must be an integer >= 1")
        rows.append((prompt, output_len))
    if not rows:
        raise ValueError(f"--dataset-path: {path} has no prompts")
    return rows


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"--dataset-path: cannot read {path}: {exc.strerror or exc}") from None


def _read_json(path: str) -> object:
    try:
        return orjson.loads(_read(path))
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"--dataset-path: {path} is not JSON: {exc}") from None
