"""Sudoku data layer: solver, graded generator, loaders, augmentation.

Uniqueness is checked by ``count_solutions`` below, a deliberately plain backtracking counter
that shares no code with ``loopkit.sudoku.solver``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loopkit.sudoku import (
    LEVELS,
    Grade,
    SudokuFormatError,
    augment,
    generate,
    is_valid_solution,
    load_puzzles,
    make_puzzle,
    random_full_grid,
    save_puzzles,
    solve,
    valid_solutions,
)
from loopkit.sudoku import generator as generator_module

DATA = Path(__file__).resolve().parents[1] / "data" / "sudoku"  # public domain, data/README.md

# A well-known hard puzzle (one solution, needs guessing for a singles-only solver).
HARD = "800000000003600000070090200050007000000045700000100030001000068008500010090000400"


def count_solutions(grid, limit=2):
    """Count solutions up to ``limit`` by backtracking on the blank with fewest options."""
    g = [int(v) for v in grid]

    def options(i):
        r, c = divmod(i, 9)
        b = (r // 3) * 27 + (c // 3) * 3
        used = {g[r * 9 + k] for k in range(9)} | {g[k * 9 + c] for k in range(9)}
        used |= {g[b + 9 * dr + dc] for dr in range(3) for dc in range(3)}
        return [d for d in range(1, 10) if d not in used]

    for i in range(81):  # givens must not clash
        if g[i]:
            v, g[i] = g[i], 0
            ok = v in options(i)
            g[i] = v
            if not ok:
                return 0

    def rec(need):  # solutions below this state, at most ``need``
        best = None
        for i in range(81):
            if g[i] == 0:
                opts = options(i)
                if best is None or len(opts) < len(best[1]):
                    best = (i, opts)
                    if len(opts) <= 1:
                        break
        if best is None:
            return 1
        total = 0
        i, opts = best
        for d in opts:
            g[i] = d
            total += rec(need - total)
            g[i] = 0
            if total >= need:
                break
        return total

    return rec(limit)


def grid(s: str) -> np.ndarray:
    return np.array([int(ch) for ch in s.replace(".", "0")], dtype=np.int8)


# ---------------------------------------------------------------- solver


def test_solver_basic_cases():
    hard = grid(HARD)
    res = solve(hard, limit=2)
    assert res.count == 1 and res.unique and not res.propagation_only and res.nodes > 0
    assert is_valid_solution(res.solutions[0], hard)
    assert count_solutions(hard) == 1

    full = res.solutions[0]
    again = solve(full)
    assert again.unique and again.propagation_only and again.nodes == 0
    assert np.array_equal(again.solutions[0], full)

    assert solve(np.zeros(81, dtype=np.int8), limit=5).count == 5  # many solutions
    clash = np.zeros(81, dtype=np.int8)
    clash[0] = clash[8] = 4  # same digit twice in row 1
    assert solve(clash).count == 0
    with pytest.raises(ValueError):
        solve(np.zeros(80, dtype=np.int8))


def test_is_valid_solution_rejects():
    puzzle = grid(HARD)
    sol = solve(puzzle).solutions[0]
    assert is_valid_solution(sol, puzzle)
    assert is_valid_solution(sol.reshape(9, 9), puzzle.reshape(9, 9))
    given = int(np.flatnonzero(puzzle)[0])
    other = sol.copy()
    other[given] = puzzle[given] % 9 + 1  # breaks a given (and the grid)
    assert not is_valid_solution(other, puzzle)
    swapped = sol.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # a valid-looking multiset, invalid columns
    assert not is_valid_solution(swapped, np.zeros(81, dtype=np.int8))
    blank = sol.copy()
    blank[5] = 0
    assert not is_valid_solution(blank, np.zeros(81, dtype=np.int8))
    batch = np.stack([sol, other, swapped, blank])
    assert valid_solutions(batch, np.stack([puzzle] * 4)).tolist() == [True, False, False, False]


# ---------------------------------------------------------------- generator


def test_random_full_grid_and_make_puzzle():
    a = random_full_grid(np.random.default_rng(1))
    assert is_valid_solution(a, np.zeros(81))
    assert np.array_equal(a, random_full_grid(np.random.default_rng(1)))
    assert not np.array_equal(a, random_full_grid(np.random.default_rng(2)))
    puzzle, solution, grade = make_puzzle(np.random.default_rng(3), min_clues=40, solution=a)
    assert np.array_equal(solution, a) and grade.clues == 40 == (puzzle != 0).sum()
    assert np.array_equal(puzzle[puzzle != 0], a[puzzle != 0])
    assert count_solutions(puzzle) == 1


LEVEL_COUNTS = {"easy": 24, "medium": 24, "hard": 24, "expert": 16}


@pytest.fixture(scope="module")
def level_sets():
    return {lv: generate(lv, n, seed=11, progress=False) for lv, n in LEVEL_COUNTS.items()}


@pytest.mark.parametrize("level", list(LEVEL_COUNTS))
def test_levels_unique_and_graded(level, level_sets):
    puzzles, solutions, grades = level_sets[level]
    n = LEVEL_COUNTS[level]
    assert puzzles.shape == solutions.shape == (n, 81) and puzzles.dtype == np.int8
    assert len({p.tobytes() for p in puzzles}) == n
    clues, nodes, prop = grades["clues"], grades["nodes"], grades["propagation_only"]
    for p, s, c, k, po in zip(puzzles, solutions, clues, nodes, prop):
        assert count_solutions(p) == 1
        assert is_valid_solution(s, p)
        res = solve(p)
        assert np.array_equal(res.solutions[0], s)
        assert (c, k, po) == ((p != 0).sum(), res.nodes, res.nodes == 0)
    # the level definitions of the generator's docstring
    if level == "easy":
        assert prop.all() and (clues >= 36).all() and (clues <= 45).all()
    elif level == "medium":
        assert prop.all() and (clues <= 30).all()
    elif level == "hard":
        assert (nodes >= 1).all() and (nodes <= 9).all()
    else:
        assert (nodes >= 10).all()
        for p in puzzles[:3]:  # minimal: every clue is needed
            for i in np.flatnonzero(p):
                q = p.copy()
                q[i] = 0
                assert count_solutions(q) == 2
    assert all(LEVELS[level].accepts(Grade(*g)) for g in zip(clues, nodes, prop))


def test_generation_deterministic_across_workers(level_sets):
    one = generate("hard", 6, seed=11, workers=1, progress=False)
    two = generate("hard", 6, seed=11, workers=2, progress=False)
    for a, b in zip(one[:2], two[:2]):
        assert np.array_equal(a, b)
    for k in one[2]:
        assert np.array_equal(one[2][k], two[2][k])
    # puzzle i does not depend on n, and matches the module-scoped run
    assert np.array_equal(one[0], level_sets["hard"][0][:6])
    other = generate("hard", 2, seed=12, progress=False)[0]
    assert not np.array_equal(other, one[0][:2])


def test_generation_cache(tmp_path, monkeypatch):
    first = generate("medium", 5, seed=2, cache_dir=tmp_path, progress=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].endswith(".npz")  # no temporary left behind

    def boom(*a, **k):
        raise AssertionError("cache miss: generator ran again")

    monkeypatch.setattr(generator_module, "_make_range", boom)
    second = generate("medium", 5, seed=2, cache_dir=tmp_path, progress=False)
    for a, b in zip(first[:2], second[:2]):
        assert np.array_equal(a, b) and a.dtype == b.dtype
    for k in first[2]:
        assert np.array_equal(first[2][k], second[2][k])
    with pytest.raises(AssertionError, match="cache miss"):  # other key: not served from cache
        generate("medium", 5, seed=3, cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown sudoku level"):
        generate("fiendish", 1)


# ---------------------------------------------------------------- augmentation


def test_augment_preserves_validity_and_uniqueness(level_sets):
    puzzles, solutions, _ = level_sets["hard"]
    rng = np.random.default_rng(0)
    ap, asol = augment(puzzles, solutions, rng)
    assert ap.dtype == puzzles.dtype and ap.shape == puzzles.shape
    assert ((ap != 0).sum(1) == (puzzles != 0).sum(1)).all()
    assert not np.array_equal(ap, puzzles)
    for p, s in zip(ap, asol):
        assert is_valid_solution(s, p)
        assert solve(p).unique
    for p in ap[:6]:
        assert count_solutions(p) == 1
    # same rng state, same output; many distinct images of one grid
    again = augment(puzzles, solutions, np.random.default_rng(0))
    assert np.array_equal(again[0], ap) and np.array_equal(again[1], asol)
    copies = np.repeat(solutions[:1], 200, axis=0)
    images, none = augment(copies, rng=rng)
    assert none is None and len({g.tobytes() for g in images}) == 200
    assert all(is_valid_solution(g, np.zeros(81)) for g in images)


# ---------------------------------------------------------------- loaders

PUZ = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
SOL = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def test_load_all_variants(tmp_path):
    dotted = PUZ.replace("0", ".")
    files = {
        "plain.txt": f"# comment\n\n{PUZ}\n{dotted}\n",
        "id.txt": f"a1 {PUZ}\nb2 {dotted}\n",
        "rating.txt": f"{PUZ} 1.5\n{dotted}\t7\n",
        "sol.txt": f"{PUZ} {SOL}\n",
        "both.txt": f"x {PUZ} 2.5 {SOL}\n\n# c\ny {dotted} {SOL} 3.25\n",
        "commas.csv": f"{PUZ},{SOL}\n{dotted} ,{SOL}\n",
    }
    expected = grid(PUZ)
    (tmp_path / "bom-crlf.txt").write_bytes(f"\ufeff{PUZ}\r\n# c\r\n{dotted}\r\n".encode())
    for name in ["bom-crlf.txt", *files]:
        path = tmp_path / name
        if name in files:
            path.write_text(files[name])
        loaded = load_puzzles(path)
        assert loaded.puzzles.dtype == np.int8, name
        assert (loaded.puzzles == expected).all(), name
    assert load_puzzles(tmp_path / "plain.txt").solutions is None
    assert load_puzzles(tmp_path / "id.txt").ids == ["a1", "b2"]
    assert load_puzzles(tmp_path / "rating.txt").ratings.tolist() == [1.5, 7.0]
    both = load_puzzles(tmp_path / "both.txt")
    assert both.ids == ["x", "y"] and both.ratings.tolist() == [2.5, 3.25]
    assert (both.solutions == grid(SOL)).all() and len(both) == 2
    assert load_puzzles(tmp_path / "commas.csv").solutions.shape == (2, 81)

    out = tmp_path / "saved.txt"
    save_puzzles(out, both)
    back = load_puzzles(out)
    assert back.ids == both.ids and back.ratings.tolist() == both.ratings.tolist()
    assert np.array_equal(back.puzzles, both.puzzles)
    assert np.array_equal(back.solutions, both.solutions)
    save_puzzles(out, both.puzzles)
    assert load_puzzles(out).ids is None


def _with(puzzle, **cells):
    s = list(puzzle)
    for k, v in cells.items():
        s[int(k[1:])] = v
    return "".join(s)


SWAP_1_2 = str.maketrans("12", "21")  # a valid grid that breaks givens 1 and 2
# (bad line, words its error must contain); the bad line is line 3 of the file
NO_SOLUTION = "12345678" + "0" * 9 + "9" + "0" * 63  # cell 9 must be 9, but its column has one
BAD_LINES = {
    "short": (PUZ[:80], "80 characters"),
    "long-with-id": ("id7 " + PUZ + "0", "82 characters"),
    "letter": (_with(PUZ, c3="x"), "bad character 'x' at position 4"),
    "row-clash": (_with(PUZ, c2="5"), "digit 5 appears twice in row 1"),
    "col-clash": (_with(PUZ, c54="4"), "digit 4 appears twice in column 1"),
    "box-clash": (_with(PUZ, c2="6"), "digit 6 appears twice in box 1"),
    "unsolvable": (NO_SOLUTION, "no solution"),
    "solution-mismatch": (f"{PUZ} {SOL.translate(SWAP_1_2)}", "disagrees with the given at row 2, column 4"),
    "solution-invalid": (f"{_with(PUZ, c0='0')} {_with(SOL, c0='4')}", "not a valid sudoku"),
    "solution-blank": (f"{PUZ} {_with(SOL, c7='0')}", "solution has a blank"),
    "solution-short": (f"{PUZ} {SOL[:80]}", "solution has 80 characters"),
    "two-ratings": (f"{PUZ} 1.0 2.0", "two ratings"),
    "junk-token": (f"{PUZ} hello", "unrecognised token 'hello'"),
    "field-mismatch": (f"{PUZ} 4.5", "has a rating, unlike the lines before"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_load_errors_name_file_and_line(tmp_path, case):
    line, words = BAD_LINES[case]
    path = tmp_path / f"{case}.txt"
    path.write_text(f"# header\n{PUZ}\n{line}\n{PUZ}\n")
    with pytest.raises(SudokuFormatError) as err:
        load_puzzles(path)
    msg = str(err.value)
    assert f"{case}.txt:3:" in msg and words in msg, msg
    assert isinstance(err.value, ValueError)


def test_unsolvable_allowed_without_check(tmp_path):
    path = tmp_path / "u.txt"
    path.write_text(NO_SOLUTION + "\n")
    assert len(load_puzzles(path, check_solvable=False)) == 1


def test_real_sudoku_file_loads():
    path = DATA / "sudoku_exchange_graded.txt"
    data = load_puzzles(path)
    n = len(data)
    assert n > 1000 and data.solutions is None
    assert len(data.ids) == n and all(len(i) == 12 for i in data.ids)
    assert data.ratings.shape == (n,) and np.isfinite(data.ratings).all()
    hardest = np.argsort(data.ratings)[-5:]
    for i in hardest:
        res = solve(data.puzzles[i])
        assert res.unique and is_valid_solution(res.solutions[0], data.puzzles[i])


def test_load_named_column_csv(tmp_path):
    """Kaggle / Hugging Face dumps: a header names the columns; extra columns are ignored."""
    dotted = PUZ.replace("0", ".")
    kaggle = tmp_path / "kaggle.csv"
    kaggle.write_text(f"id,puzzle,solution,clues,difficulty\n7,{dotted},{SOL},30,2.2\n8,{PUZ},{SOL},30,0.5\n")
    loaded = load_puzzles(kaggle)
    assert loaded.ids == ["7", "8"] and loaded.ratings.tolist() == [2.2, 0.5]
    assert (loaded.puzzles == grid(PUZ)).all() and (loaded.solutions == grid(SOL)).all()
    hf = tmp_path / "hf.csv"
    hf.write_text(f"source,question,answer,rating\nbook,{dotted},{SOL},12\n")
    assert load_puzzles(hf).ratings.tolist() == [12.0] and load_puzzles(hf).ids is None
    swapped = tmp_path / "swapped.csv"  # column order comes from the header, not position
    swapped.write_text(f"solutions,quizzes\n{SOL},{PUZ}\n")
    assert (load_puzzles(swapped).puzzles == grid(PUZ)).all()

    for text, words in [("id,clues\n1,30\n", "names no puzzle column"),
                        (f"puzzle,solution\n{PUZ},{SOL}\n{PUZ}\n", "kaggle.csv:3: 1 columns"),
                        (f"puzzle,rating\n{PUZ},x1\n", "kaggle.csv:2: unrecognised token 'x1'")]:
        kaggle.write_text(text)
        with pytest.raises(SudokuFormatError, match=words):
            load_puzzles(kaggle)
