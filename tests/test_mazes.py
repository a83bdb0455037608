"""Maze data layer: generator (perfect and loopy mazes, targets, seeding, workers, cache) and the
text loader (round trip, one-line errors naming file and line, fuzzed input).

The checks here share no code with ``loopkit.mazes``: perfect mazes are checked with a plain
union-find over the cells, targets by walking the marked chain, and uniqueness with loops by
enumerating every simple path with a depth-first search.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopkit.config import ConfigError
from loopkit.mazes import (
    GOAL,
    OPEN,
    START,
    WALL,
    MazeFormatError,
    cache_path,
    format_maze,
    format_mazes,
    generate,
    load_mazes,
    make_maze,
    maze_at,
    parse_mazes,
    save_mazes,
    shortest_path,
)
from loopkit.mazes import generator as generator_module
from test_loader_fuzz import damaged

DATA = Path(__file__).resolve().parents[1] / "data" / "mazes"
STEPS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def passages(x) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(cell, cell) pairs, as (row, col) grid coordinates, joined by an open character."""
    n = len(x)
    out = []
    for r in range(1, n - 1):
        for c in range(1, n - 1):
            if x[r, c] != WALL and (r % 2) != (c % 2):  # between two cells, one coordinate even
                out.append(((r - 1, c), (r + 1, c)) if r % 2 == 0 else ((r, c - 1), (r, c + 1)))
    return out


def is_spanning_tree(x) -> bool:
    """Union-find over the cells: (cells - 1) passages and no passage closing a cycle."""
    n = len(x)
    cells = [(r, c) for r in range(1, n, 2) for c in range(1, n, 2)]
    parent = {cell: cell for cell in cells}

    def root(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    edges = passages(x)
    if len(edges) != len(cells) - 1:
        return False
    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra == rb:
            return False
        parent[ra] = rb
    return len({root(c) for c in cells}) == 1


def where(x, token) -> tuple[int, int]:
    (r,), (c,) = np.nonzero(x == token)
    return int(r), int(c)


def assert_path(x, y):
    """``y`` marks a simple 4-connected chain of open characters from START to GOAL."""
    n = len(x)
    marked = {(int(r), int(c)) for r, c in np.argwhere(y == 1)}
    assert set(np.unique(y)) <= {0, 1} and y.dtype == np.uint8
    assert all(x[p] != WALL for p in marked)
    s, g = where(x, START), where(x, GOAL)
    assert s in marked and g in marked

    def nbrs(p):
        return [(p[0] + dr, p[1] + dc) for dr, dc in STEPS
                if 0 <= p[0] + dr < n and 0 <= p[1] + dc < n and (p[0] + dr, p[1] + dc) in marked]

    for p in marked:
        assert len(nbrs(p)) == (1 if p in (s, g) else 2), p  # no branch, no dead end
    prev, cur, seen = None, s, {s}
    while cur != g:
        (cur, prev) = next(q for q in nbrs(cur) if q != prev), cur
        assert cur not in seen
        seen.add(cur)
    assert seen == marked  # one chain, nothing marked off it


def simple_path_lengths(x) -> tuple[list[int], set]:
    """Lengths (characters) of every simple START -> GOAL path, and the shortest ones' cell sets."""
    n = len(x)
    s, g = where(x, START), where(x, GOAL)
    lengths, shortest, best = [], [], [n * n + 1]
    path, on = [s], {s}

    def dfs(p):
        if p == g:
            lengths.append(len(path))
            if len(path) < best[0]:
                best[0] = len(path)
                shortest.clear()
            if len(path) == best[0]:
                shortest.append(frozenset(path))
            return
        for dr, dc in STEPS:
            q = (p[0] + dr, p[1] + dc)
            if x[q] != WALL and q not in on:
                on.add(q)
                path.append(q)
                dfs(q)
                path.pop()
                on.discard(q)

    dfs(s)
    return lengths, shortest


def assert_well_formed(x, n):
    assert x.shape == (n, n) and x.dtype == np.uint8
    assert not x[0].any() and not x[-1].any() and not x[:, 0].any() and not x[:, -1].any()
    assert not x[::2, ::2].any()  # (even, even) positions are walls
    assert (x == START).sum() == 1 and (x == GOAL).sum() == 1
    for token in (START, GOAL):
        r, c = where(x, token)
        assert r % 2 == 1 and c % 2 == 1  # on a cell
    assert set(np.unique(x)) <= {WALL, OPEN, START, GOAL}


# ---------------------------------------------------------------------------------------- generator


@pytest.mark.parametrize("size", [5, 7, 9, 15, 31, 59])
def test_perfect_mazes_are_spanning_trees_with_valid_targets(size):
    x, y = generate(size, 12, seed=size, progress=False)
    assert x.shape == y.shape == (12, size, size)
    for xi, yi in zip(x, y):
        assert_well_formed(xi, size)
        assert is_spanning_tree(xi)  # one path between any two cells, so the target is unique
        assert_path(xi, yi)


def test_big_maze_needs_no_recursion():
    x, y = maze_at(201, 0, 0)
    assert is_spanning_tree(x)
    assert_path(x, y)


@pytest.mark.parametrize("size,loops", [(7, 0.5), (9, 0.2), (9, 0.5), (11, 0.3), (9, 1.0)])
def test_loopy_targets_are_the_unique_shortest_path(size, loops):
    several = 0
    for i in range(15):
        x, y = maze_at(size, 5, i, loops)
        assert_well_formed(x, size)
        assert_path(x, y)
        lengths, shortest = simple_path_lengths(x)
        assert len(shortest) == 1 and shortest[0] == {(int(r), int(c)) for r, c in np.argwhere(y == 1)}
        several += len(lengths) > 1
    assert several > 0  # loops do give alternative (longer) paths


@pytest.mark.parametrize("size", [9, 15, 29])
def test_loops_open_exactly_their_share_of_inner_walls(size):
    m = (size - 1) // 2
    for loops in (0.1, 0.3):
        x, _ = generate(size, 5, seed=1, loops=loops, progress=False)
        for xi in x:
            assert len(passages(xi)) == m * m - 1 + round(loops * (m - 1) ** 2)
    perfect, _ = generate(size, 5, seed=1, progress=False)
    loopy, _ = generate(size, 5, seed=1, loops=0.1, progress=False)
    assert all(len(passages(a)) > len(passages(b)) for a, b in zip(loopy, perfect))


def test_same_seed_same_mazes_and_maze_i_alone(monkeypatch):
    x, y = generate(9, 20, seed=3, loops=0.2, progress=False)
    x2, y2 = generate(9, 20, seed=3, loops=0.2, progress=False)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    head, _ = generate(9, 7, seed=3, loops=0.2, progress=False)
    assert np.array_equal(head, x[:7])  # maze i does not depend on n
    for i in (0, 13, 19):
        xi, yi = maze_at(9, 3, i, 0.2)
        assert np.array_equal(xi, x[i]) and np.array_equal(yi, y[i])
    assert not np.array_equal(generate(9, 20, seed=4, loops=0.2, progress=False)[0], x)
    assert not np.array_equal(generate(9, 20, seed=3, loops=0.1, progress=False)[0], x)
    assert not np.array_equal(generate(9, 20, seed=3, progress=False)[0], x)
    assert len({xi.tobytes() for xi in x}) > 15  # (not all the same maze)


def test_workers_do_not_change_the_output(monkeypatch):
    monkeypatch.setattr(generator_module, "POOL_MIN_CHARS", 0)  # use the pool even for a small job
    one = generate(11, 40, seed=2, loops=0.1, workers=1, progress=False)
    two = generate(11, 40, seed=2, loops=0.1, workers=2, progress=False)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])


def test_make_maze_draws_from_the_given_generator():
    a = make_maze(9, np.random.default_rng(1))
    b = make_maze(9, np.random.default_rng(1))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_cache_round_trip(tmp_path, monkeypatch):
    x, y = generate(9, 10, seed=1, loops=0.1, cache_dir=tmp_path, progress=False)
    path = cache_path(tmp_path, 9, 10, 1, 0.1)
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left

    def boom(*args):
        raise AssertionError("generated again instead of read from the cache")

    monkeypatch.setattr(generator_module, "_make_range", boom)
    x2, y2 = generate(9, 10, seed=1, loops=0.1, cache_dir=tmp_path, progress=False)
    assert np.array_equal(x, x2) and np.array_equal(y, y2) and x2.dtype == np.uint8
    assert cache_path(tmp_path, 9, 10, 1, 0.0) != path != cache_path(tmp_path, 9, 10, 2, 0.1)
    monkeypatch.undo()
    generate(9, 3, seed=1, cache_dir=tmp_path / "ro", progress=False, read_only=True)
    assert not (tmp_path / "ro").exists()


@pytest.mark.parametrize("kwargs", [dict(size=8), dict(size=3), dict(size=9.0), dict(size=True),
                                    dict(loops=-0.1), dict(loops=1.5), dict(n=-1), dict(seed=-1),
                                    dict(workers=-1)])
def test_bad_arguments(kwargs):
    args = dict(size=9, n=2, seed=0, progress=False) | kwargs
    with pytest.raises(ValueError):
        generate(**args)


HAND = "#######\n#S..#.#\n###.#.#\n#...#.#\n#.###.#\n#....G#\n#######\n"  # column 6 is a dead end


def test_shortest_path_of_a_hand_made_maze():
    x = parse_mazes(HAND).x[0]
    sol = shortest_path(x)
    assert sol.paths == 1 and sol.length == 13
    assert_path(x, sol.target)
    x[1, 3] = WALL
    assert shortest_path(x) == (None, 0, 0)


# ----------------------------------------------------------------------------------------- text files

GOOD = """\
#######
#S....#
#####.#
#.....#
#.#####
#....G#
#######
"""
SEVERAL = "#######\n#S....#\n#.###.#\n#....G#\n#.#####\n#.....#\n#######\n"


def test_text_round_trip(tmp_path):
    xs, ys = [], []
    for size, loops in ((9, 0.0), (15, 0.2), (9, 0.1), (21, 0.0)):
        x, y = generate(size, 3, seed=7, loops=loops, progress=False)
        xs += list(x)
        ys += list(y)
    for marks in (None, ys):
        path = tmp_path / "mazes.txt"
        save_mazes(path, xs, marks)
        loaded = load_mazes(path)
        assert len(loaded) == len(xs)
        for a, b, xl, yl in zip(xs, ys, loaded.x, loaded.y):
            assert np.array_equal(a, xl) and np.array_equal(b, yl) and xl.dtype == yl.dtype == np.uint8
        assert format_mazes(loaded.x, marks and loaded.y) == path.read_text()
        assert loaded.lines[:2] == [1, 11]
    by_size = loaded.by_size()
    assert list(by_size) == [9, 15, 21] and by_size[9][0].shape == (6, 9, 9)
    assert np.array_equal(by_size[15][1], np.stack(ys[3:6]))
    assert [p.name for p in tmp_path.iterdir()] == ["mazes.txt"]  # written atomically


def test_format_marks_the_path_and_keeps_s_and_g():
    x, y = maze_at(9, 0, 0)
    text = format_maze(x, y)
    assert text.count("o") == int(y.sum()) - 2 and text.count("S") == text.count("G") == 1
    assert format_maze(x) == text.replace("o", ".")
    one = parse_mazes(text)
    assert np.array_equal(one.x[0], x) and np.array_equal(one.y[0], y)


def test_lenient_whitespace_and_line_ends():
    text = "\n\n" + GOOD.replace("\n", "  \r\n") + "\r\n \t\r\n" + GOOD.replace("\n", "\r")
    loaded = parse_mazes(text)
    assert len(loaded) == 2 and loaded.lines == [3, 12]


def _maze_lines(*edits: tuple[int, str]) -> str:
    rows = GOOD.splitlines()
    for k, row in edits:
        rows[k - 1] = row
    return "\n".join(rows) + "\n"


MALFORMED = {  # name: (file text or bytes, line named (None: none), words the message holds)
    "bad character": (_maze_lines((3, "##x##.#")), 3, "bad character 'x' at column 3"),
    "tab": (_maze_lines((4, "#.\t...#")), 4, "bad character '\\t' at column 3"),
    "leading space": (_maze_lines((2, " #S....#")), 2, "bad character ' ' at column 1"),
    "digit": (_maze_lines((6, "#...1G#")), 6, "bad character '1'"),
    "short row": (_maze_lines((4, "#....#")), 4, "row of 6 characters; the maze's first row (line 1) has 7"),
    "long row": (_maze_lines((5, "#.######")), 5, "row of 8 characters"),
    "blank line missing": (GOOD + GOOD, 8, "row 8 of a maze 7 characters wide; a maze is square"),
    "too few rows": (GOOD.replace("#.#####\n", "", 1), 1, "maze of 6 rows of 7 characters (lines 1-6)"),
    "even side": ("######\n#S..G#\n#....#\n#....#\n#....#\n######\n", 1, "maze side 6"),
    "side 3": ("###\n#S#\n###\n", 1, "side 3 (lines 1-3); the side must be odd and at least 5"),
    "open border": (_maze_lines((4, "#......")), 4, "'.' at column 7 on the maze's border"),
    "S on the border": (_maze_lines((1, "#S#####"), (2, "#.....#")), 1, "'S' at column 2 on the maze's border"),
    "no S": (_maze_lines((2, "#.....#")), 1, "has no S (start)"),
    "no G": (_maze_lines((6, "#.....#")), 1, "has no G (goal)"),
    "two S": (_maze_lines((4, "#S....#")), 4, "a second S (start) at column 2 (the first is on line 2)"),
    "two G": (_maze_lines((2, "#S..G.#")), 6, "a second G (goal) at column 6 (the first is on line 2)"),
    "S off a cell": (_maze_lines((2, "#.S...#")), 2, "S at row 2, column 3 of the maze is not on a cell"),
    "G off a cell": (_maze_lines((6, "#...G.#")), 6, "G at row 6, column 5"),
    "no path": (_maze_lines((3, "#######")), 1, "no path from S (line 2) to G (line 6)"),
    "two shortest paths": (SEVERAL, 1, "two or more shortest paths (7 characters) from S (line 2) to G (line 4)"),
    "mark off the path": (HAND.replace("#S..#.#", "#Soo#o#"), 2, "column 6 is marked 'o' but not on the shortest path"),
    "marks stop short": (_maze_lines((2, "#Soooo#")), 3, "column 6 is on, but not marked 'o' on"),
    "fault in the second maze": (GOOD + "\n" + _maze_lines((2, "#S..?.#")), 10, "bad character '?' at column 5"),
    "empty file": ("", None, "no maze in the file"),
    "blank lines only": ("\n  \n\t\n", None, "no maze in the file"),
    "latin-1": (_maze_lines((3, "#####é#")).encode("latin-1"), 3, "not UTF-8 text: byte 0xe9 at column 6"),
    "utf-16": (GOOD.encode("utf-16"), 1, "UTF-16 text"),
    "nul": (GOOD.replace("\n", "\n\x00", 2).encode(), 2, "NUL"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_files_name_the_file_and_line(tmp_path, name):
    content, line, words = MALFORMED[name]
    path = tmp_path / "mazes.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(MazeFormatError) as err:
        load_mazes(path)
    message = str(err.value)
    assert isinstance(err.value, ConfigError) and "\n" not in message, message
    assert message.startswith(f"{path}:{line}: " if line else f"{path}: "), message
    assert words in message, message


def test_good_fixture_and_marked_fixture_load():
    assert len(parse_mazes(GOOD)) == 1
    marked = _maze_lines((2, "#Soooo#"), (3, "#####o#"), (4, "#ooooo#"), (5, "#o#####"), (6, "#ooooG#"))
    loaded = parse_mazes(marked)
    assert format_maze(loaded.x[0], loaded.y[0]) + "\n" == marked


def test_sample_file_is_the_generators_output():
    """data/mazes/sample.txt: mazes 0-2 of sizes 9 and 15, seed 0, no loops (data/README.md)."""
    loaded = load_mazes(DATA / "sample.txt")
    expected = [maze_at(size, 0, i) for size in (9, 15) for i in range(3)]
    assert len(loaded) == len(expected)
    for (x, y), xl, yl in zip(expected, loaded.x, loaded.y):
        assert np.array_equal(x, xl) and np.array_equal(y, yl)


# ------------------------------------------------------------------------------------------ fuzzing

# modest counts (the whole fuzz section runs in a few seconds on one core); no example database on disk
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
VALID_FILE = GOOD + "\n" + format_maze(*maze_at(9, 0, 1, 0.2)) + "\n\n" + format_maze(maze_at(11, 0, 2)[0]) + "\n"
PIECES = [b"#", b".", b"S", b"G", b"o", b"x", b" ", b"\t", b"\n", b"\n\n", b"\r", b"\r\n", b"##", b"\xe9", b"\xff",
          b"\x00", "é".encode(), "\u2028".encode(), b"\xef\xbb\xbf"]




def _blocks(text: str) -> list[str]:
    """Non-blank line groups, each row without its trailing whitespace (the loader's blocks)."""
    blocks, rows = [], []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line.rstrip():
            rows.append(line.rstrip())
        elif rows:
            blocks.append(rows)
            rows = []
    return [r for r in blocks + [rows] if r]


def _check_loaded(loaded, text: str):
    blocks = _blocks(text)
    assert len(loaded) == len(blocks) == len(loaded.y) == len(loaded.lines)  # no maze lost or merged
    for x, y, rows in zip(loaded.x, loaded.y, blocks):
        n = len(x)
        assert x.shape == (n, n) and n % 2 == 1 and n >= 5
        assert format_maze(x) == "\n".join(rows).replace("o", ".")  # the text, token for token
        assert_path(x, y)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=st.data())
def test_damaged_maze_files_load_right_or_fail_clearly(folder, data):
    path = folder / "mazes.txt"
    raw = data.draw(damaged(VALID_FILE, PIECES))
    path.write_bytes(raw)
    try:
        loaded = load_mazes(path)
    except MazeFormatError as err:
        message = str(err)
        assert "\n" not in message and message.startswith(f"{path}:"), message
        return
    _check_loaded(loaded, raw.decode("utf-8-sig"))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from("#.SGo \t\nx\r") | st.characters(), max_size=300))
def test_random_text_parses_or_fails_clearly(text):
    try:
        loaded = parse_mazes(text, "in.txt")
    except MazeFormatError as err:
        assert "\n" not in str(err) and str(err).startswith("in.txt:"), str(err)
        return
    _check_loaded(loaded, text)


@FUZZ
@given(data=st.data())
def test_harmless_layout_loads_the_same_mazes(folder, data):
    """Line ends (\\n, \\r\\n, \\r), trailing whitespace, extra blank lines, a BOM: same mazes."""
    blocks = _blocks(VALID_FILE)
    end = data.draw(st.sampled_from(["\n", "\r\n", "\r"]))
    pad = st.sampled_from(["", " ", "\t", "  \t"])
    out = [data.draw(st.sampled_from(["", "\ufeff"])) + end * data.draw(st.integers(0, 2))]
    for k, rows in enumerate(blocks):
        out += [row + data.draw(pad) + end for row in rows]
        if k < len(blocks) - 1:
            out += [data.draw(pad) + end for _ in range(data.draw(st.integers(1, 3)))]
    path = folder / "layout.txt"
    path.write_bytes("".join(out).encode())
    loaded, expected = load_mazes(path), parse_mazes(VALID_FILE)
    assert len(loaded) == len(expected) == 3
    for a, b, ya, yb in zip(loaded.x, expected.x, loaded.y, expected.y):
        assert np.array_equal(a, b) and np.array_equal(ya, yb)
