"""The README's result tables say what the committed results JSON says (issue 12, item 10: a cell
mixed two Lichess buckets). Reads JSON and Markdown only."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def table_after(text: str, marker: str) -> list[list[str]]:
    """The cells of the first Markdown table after `marker`, header and rule left out."""
    rows = []
    for line in text[text.index(marker):].splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


def exact_at(run: Path, name: str, t: int) -> float:
    res = json.loads((run / "results.json").read_text())
    return round(100 * res["curves"][name]["exact"][t - 1], 1)


def test_readme_sudoku_table_is_the_eval_json():
    runs = {"norm=outer recall=none": "none_outer", "norm=outer recall=standard": "standard_outer",
            "norm=outer recall=internal": "internal_outer", "norm=pre recall=internal": "internal_pre"}
    rows = table_after(README, "**Sudoku** (`results/sudoku/`")
    assert [r[0] for r in rows] == list(runs)
    for label, *cells in rows:
        run = ROOT / "results" / "sudoku" / runs[label] / "eval"
        want = [exact_at(run, level, k * 16) for level in ("easy", "medium", "hard", "expert") for k in (1, 2, 4)]
        assert [float(c) for c in cells] == want, label


@pytest.mark.parametrize("row", range(3))
def test_readme_chess_table_is_the_eval_json(row):
    """Every cell is one eval set at T = 16 / 64; the Lichess columns are one rating bucket each."""
    label, *cells = table_after(README, "**Chess** (`results/chess/`")[row]
    run = ROOT / "results" / "chess" / f"{label}_outer"
    sets = [("eval", f"grade{g}") for g in ("1-2", "3-6", "7-8", "9-10")]
    sets += [("eval_lichess", "lichess_puzzles_1000:-1300"), ("eval_lichess", "lichess_puzzles_1000:1700-")]
    assert len(cells) == len(sets)
    for cell, (folder, name) in zip(cells, sets):
        at_t, at_4t = (float(v) for v in re.split(r"\s*/\s*", cell))
        assert (at_t, at_4t) == (exact_at(run / folder, name, 16), exact_at(run / folder, name, 64)), (label, name)
