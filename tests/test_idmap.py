"""Pure unit tests for devbox.idmap: every message asserted exactly."""

from __future__ import annotations

import dataclasses

import pytest

from devbox.core.idmap import (
    DEFAULT_SUB_COUNT,
    DEFAULT_SUB_MAX,
    DEFAULT_SUB_MIN,
    ID_LIMIT,
    Account,
    IdRange,
    Overlap,
    Problem,
    SubidEntry,
    SubidFile,
    account_overlaps,
    allocate,
    format_map,
    map_rows,
    parse_login_defs,
    parse_proc_map,
    parse_subid,
    predict_map,
    range_overlaps,
    seed_style,
    sub_bounds,
    to_container,
    to_host,
)

LAST_ID = 2**32 - 2


def entries_of(text: str, path: str = "/etc/subuid") -> list[tuple[str, int, int, int]]:
    return [(e.owner, e.start, e.count, e.line) for e in parse_subid(text, path).entries]


def problems_of(text: str) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in parse_subid(text).problems]


# --- constants ------------------------------------------------------------


def test_id_limit_leaves_minus_one_unused() -> None:
    assert ID_LIMIT == 2**32 - 1
    assert ID_LIMIT - 1 == LAST_ID


def test_shadow_defaults() -> None:
    assert (DEFAULT_SUB_MIN, DEFAULT_SUB_MAX, DEFAULT_SUB_COUNT) == (100000, 600100000, 65536)


# --- SubidEntry -----------------------------------------------------------


def test_entry_end_and_text() -> None:
    e = SubidEntry("mino", 100000, 65536, 2)
    assert e.end == 165536
    assert e.text() == "mino:100000:65536"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 100, False),  # entirely below
        (0, 100000, False),  # ends exactly where the entry starts
        (0, 100001, True),  # shares the first id
        (100000, 100001, True),  # the first id alone
        (165535, 165536, True),  # the last id alone
        (165536, 200000, False),  # starts one past the last id
        (100, 1_000_000, True),  # contains the entry
        (120000, 120010, True),  # inside the entry
    ],
)
def test_entry_overlaps_half_open(start: int, end: int, expected: bool) -> None:
    assert SubidEntry("mino", 100000, 65536, 1).overlaps(start, end) is expected


# --- parse_subid: good lines -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mino:100000:65536\n", [("mino", 100000, 65536, 1)]),
        ("mino:1500:1\nmino:100000:65536\n", [("mino", 1500, 1, 1), ("mino", 100000, 65536, 2)]),
        ("1500:100000:65536\n", [("1500", 100000, 65536, 1)]),  # numeric uid key
        ("ALL:100000:65536\n", [("ALL", 100000, 65536, 1)]),
        ("user.name-1_x$:5:1\n", [("user.name-1_x$", 5, 1, 1)]),
        ("mino:0:1\n", [("mino", 0, 1, 1)]),  # a single "0" is not a leading zero
        ("mino:100000:65536", [("mino", 100000, 65536, 1)]),  # no trailing newline
        ("  mino:100000:65536  \n", [("mino", 100000, 65536, 1)]),  # surrounding spaces
        ("\tmino:100000:65536\t\n", [("mino", 100000, 65536, 1)]),
        ("mino:100000:65536\r\n", [("mino", 100000, 65536, 1)]),  # CRLF
        ("\n\nmino:1:1\n", [("mino", 1, 1, 3)]),  # line numbers count blank lines
        ("# comment\nmino:1:1\n", [("mino", 1, 1, 2)]),
        ("   # indented comment\nmino:1:1\n", [("mino", 1, 1, 2)]),
        ("#mino:1:1\n", []),  # a commented-out entry
        ("# a:b:c:d\n", []),  # comments are not checked
        ("", []),
        ("\n", []),
        ("   \n\t\n", []),
    ],
)
def test_parse_good_lines(text: str, expected: list[tuple[str, int, int, int]]) -> None:
    parsed = parse_subid(text)
    assert [(e.owner, e.start, e.count, e.line) for e in parsed.entries] == expected
    assert parsed.problems == ()


def test_parse_keeps_path() -> None:
    assert parse_subid("a:1:1\n", "/etc/subgid").path == "/etc/subgid"
    assert parse_subid("a:1:1\n").path == "/etc/subuid"


@pytest.mark.parametrize(
    ("start", "count"),
    [
        (LAST_ID, 1),  # the very last valid id
        (0, 2**32 - 1),  # every valid id
        (4294901759, 65536),  # a full range ending at the last valid id
    ],
)
def test_parse_ranges_up_to_the_last_valid_id(start: int, count: int) -> None:
    parsed = parse_subid(f"mino:{start}:{count}\n")
    assert parsed.problems == ()
    assert parsed.entries[0].end - 1 == LAST_ID


# --- parse_subid: problems -------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # wrong field count
        ("mino", "expected NAME:START:COUNT, found 1 field(s) in 'mino'"),
        ("mino:100000", "expected NAME:START:COUNT, found 2 field(s) in 'mino:100000'"),
        ("mino:100000:65536:x", "expected NAME:START:COUNT, found 4 field(s) in 'mino:100000:65536:x'"),
        ("mino:1:1:", "expected NAME:START:COUNT, found 4 field(s) in 'mino:1:1:'"),
        ("mino 100000 65536", "expected NAME:START:COUNT, found 1 field(s) in 'mino 100000 65536'"),
        ("  mino::  :x  ", "expected NAME:START:COUNT, found 4 field(s) in 'mino::  :x'"),
        # empty or padded name
        (":100000:65536", "empty user name"),
        ("::", "empty user name"),
        (
            "mino :100000:65536",
            "user name 'mino ' has surrounding whitespace: dockerd compares names exactly",
        ),
        (
            "mi\tno\t:1:1",
            "user name 'mi\\tno\\t' has surrounding whitespace: dockerd compares names exactly",
        ),
        # non-numeric
        ("mino::65536", "START '' is not a non-negative integer"),
        ("mino:100000:", "COUNT '' is not a non-negative integer"),
        ("mino:abc:65536", "START 'abc' is not a non-negative integer"),
        ("mino:100000:lots", "COUNT 'lots' is not a non-negative integer"),
        ("mino:1e5:65536", "START '1e5' is not a non-negative integer"),
        ("mino:0x186a0:65536", "START '0x186a0' is not a non-negative integer"),
        ("mino:100000.0:65536", "START '100000.0' is not a non-negative integer"),
        ("mino:100_000:65536", "START '100_000' is not a non-negative integer"),
        ("mino: 100000:65536", "START ' 100000' is not a non-negative integer"),
        ("mino:100000 :65536", "START '100000 ' is not a non-negative integer"),
        ("mino:100000: 65536", "COUNT ' 65536' is not a non-negative integer"),
        # signs
        ("mino:-1:65536", "START '-1' is not a non-negative integer"),
        ("mino:100000:-65536", "COUNT '-65536' is not a non-negative integer"),
        ("mino:+100000:65536", "START '+100000' is not a non-negative integer"),
        # unicode digits (str.isdigit() and int() accept these; dockerd does not)
        ("mino:１００:65536", "START '１００' is not a non-negative integer"),
        ("mino:100000:٦٥٥٣٦", "COUNT '٦٥٥٣٦' is not a non-negative integer"),
        ("mino:²:1", "START '²' is not a non-negative integer"),
        ("mino:1:¹", "COUNT '¹' is not a non-negative integer"),
        # START is checked before COUNT
        ("mino:x:y", "START 'x' is not a non-negative integer"),
        # leading zeros: octal to shadow-utils, decimal to dockerd
        (
            "mino:0100000:65536",
            "START '0100000' has a leading zero: shadow-utils reads it as octal, dockerd as decimal",
        ),
        (
            "mino:100000:065536",
            "COUNT '065536' has a leading zero: shadow-utils reads it as octal, dockerd as decimal",
        ),
        ("mino:00:1", "START '00' has a leading zero: shadow-utils reads it as octal, dockerd as decimal"),
        # count 0
        ("mino:100000:0", "COUNT is 0 in 'mino:100000:0': the line maps no ids"),
        ("  mino:0:0  ", "COUNT is 0 in 'mino:0:0': the line maps no ids"),
        # at and beyond 2**32
        ("mino:4294967294:2", "range 4294967294..4294967295 goes past the last valid id 4294967294"),
        ("mino:4294967295:1", "range 4294967295..4294967295 goes past the last valid id 4294967294"),
        ("mino:4294967296:1", "range 4294967296..4294967296 goes past the last valid id 4294967294"),
        ("mino:0:4294967296", "range 0..4294967295 goes past the last valid id 4294967294"),
        ("mino:4294901760:65536", "range 4294901760..4294967295 goes past the last valid id 4294967294"),
        ("mino:9999999999:1", "range 9999999999..9999999999 goes past the last valid id 4294967294"),
        ("mino:99999999999:1", "START '99999999999' is larger than the last valid id 4294967294"),
        ("mino:1:18446744073709551616", "COUNT '18446744073709551616' is larger than the last valid id 4294967294"),
    ],
)
def test_parse_problem_lines(line: str, message: str) -> None:
    parsed = parse_subid(f"ok:1:1\n{line}\nok2:2:1\n")
    assert [(p.line, p.message) for p in parsed.problems] == [(2, message)]
    # the bad line is left out; its neighbours are still read
    assert [(e.owner, e.line) for e in parsed.entries] == [("ok", 1), ("ok2", 3)]


def test_parse_huge_digit_string_is_a_problem_not_an_exception() -> None:
    # int() refuses strings over 4300 digits; the parser must not raise
    digits = "9" * 5000
    assert problems_of(f"mino:{digits}:1\n") == [
        (1, f"START {digits!r} is larger than the last valid id 4294967294")
    ]


def test_parse_every_bad_line_is_reported_with_its_own_number() -> None:
    text = "# header\nmino:1500:1\nbroken\n\nmino:x:1\nmino:100000:0\nmino:100000:65536\n"
    assert problems_of(text) == [
        (3, "expected NAME:START:COUNT, found 1 field(s) in 'broken'"),
        (5, "START 'x' is not a non-negative integer"),
        (6, "COUNT is 0 in 'mino:100000:0': the line maps no ids"),
    ]
    assert entries_of(text) == [("mino", 1500, 1, 2), ("mino", 100000, 65536, 7)]


def test_problem_is_a_plain_value() -> None:
    assert parse_subid("x\n").problems == (Problem(1, "expected NAME:START:COUNT, found 1 field(s) in 'x'"),)


# --- parse_subid: duplicates and same-owner overlaps ------------------------


def test_exact_duplicate_is_flagged_and_kept_in_file_order() -> None:
    text = "mino:100000:65536\nbob:200000:65536\n  mino:100000:65536\n"
    parsed = parse_subid(text)
    assert [(p.line, p.message) for p in parsed.problems] == [
        (3, "duplicate of line 1 ('mino:100000:65536')")
    ]
    # dockerd would stack both lines, so the prediction must show it
    assert [(e.owner, e.line) for e in parsed.entries] == [("mino", 1), ("bob", 2), ("mino", 3)]
    assert predict_map(parsed.owned_by("mino")) == (IdRange(0, 100000, 65536), IdRange(65536, 100000, 65536))


def test_every_duplicate_names_the_first_occurrence() -> None:
    assert problems_of("a:1:1\na:1:1\na:1:1\n") == [
        (2, "duplicate of line 1 ('a:1:1')"),
        (3, "duplicate of line 1 ('a:1:1')"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "mino:100000:65536\nbob:100000:65536\n",  # same range, other owner: range_overlaps' job
        "mino:100000:65536\nmino:100000:65537\n",  # not a duplicate ...
        "mino:1:1\n1500:1:1\n",
    ],
)
def test_duplicates_need_the_same_owner_start_and_count(text: str) -> None:
    assert all(not m.startswith("duplicate") for _, m in problems_of(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "mino:100000:65536\nmino:100000:65537\n",
            [
                (
                    2,
                    "'mino:100000:65537' overlaps line 1 ('mino:100000:65536') of the same owner:"
                    " the kernel refuses a map whose host ranges overlap",
                )
            ],
        ),
        (
            "mino:100000:65536\nmino:165535:10\n",
            [
                (
                    2,
                    "'mino:165535:10' overlaps line 1 ('mino:100000:65536') of the same owner:"
                    " the kernel refuses a map whose host ranges overlap",
                )
            ],
        ),
        (
            "mino:1500:1\nmino:1000:65536\n",
            [
                (
                    2,
                    "'mino:1000:65536' overlaps line 1 ('mino:1500:1') of the same owner:"
                    " the kernel refuses a map whose host ranges overlap",
                )
            ],
        ),
        ("mino:100000:65536\nmino:165536:10\n", []),  # adjacent is fine
        ("mino:100000:65536\nbob:100000:65536\n", []),  # other owners: range_overlaps
    ],
)
def test_same_owner_overlaps(text: str, expected: list[tuple[int, str]]) -> None:
    assert problems_of(text) == expected
    assert len(parse_subid(text).entries) == 2  # both lines are still what dockerd reads


# --- render round-trips -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "\n\n",
        "mino:100000:65536",
        "mino:100000:65536\n",
        "mino:1500:1\nmino:100000:65536\n",
        "mino:1500:1\nmino:100000:65536",
        "# comment\n\n  mino:1:1  \n\tbroken line\n",
        "mino:1:1\r\nbob:2:2\r\n",
        "mino:1:1\n\n\n",
        "a:1:1\na:1:1\nx:y\n:::\n",
        "   ",
        "ünïcödé:1:1\n",
    ],
)
def test_render_round_trips_byte_for_byte(text: str) -> None:
    parsed = parse_subid(text)
    assert parsed.render() == text
    assert parsed.render().encode() == text.encode()


@pytest.mark.parametrize(
    ("text", "lines", "trailing"),
    [
        ("", (), True),
        ("\n", ("",), True),
        ("a:1:1", ("a:1:1",), False),
        ("a:1:1\n", ("a:1:1",), True),
        ("a:1:1\nb:2:2", ("a:1:1", "b:2:2"), False),
        ("a:1:1\r\n", ("a:1:1\r",), True),
    ],
)
def test_lines_are_kept_exactly(text: str, lines: tuple[str, ...], trailing: bool) -> None:
    parsed = parse_subid(text)
    assert parsed.lines == lines
    assert parsed.trailing_newline is trailing


def test_render_of_edited_lines() -> None:
    parsed = parse_subid("mino:100000:65536\n")
    edited = SubidFile(parsed.path, ("mino:1500:1", *parsed.lines), parsed.entries, parsed.problems)
    assert edited.render() == "mino:1500:1\nmino:100000:65536\n"
    assert SubidFile("/etc/subuid", ("a:1:1",), (), (), trailing_newline=False).render() == "a:1:1"
    assert SubidFile("/etc/subuid", (), (), (), trailing_newline=False).render() == ""


# --- owned_by, where -------------------------------------------

FILE = """\
# managed by hand
bob:100000:65536
mino:1500:1
ALL:300000:65536
mino:165536:65536
1500:400000:65536
minotaur:500000:65536
Mino:600000:65536
mino:700000:65536
"""


def test_owned_by_is_the_name_lines_in_file_order() -> None:
    owned = parse_subid(FILE).owned_by("mino")
    assert [(e.text(), e.line) for e in owned] == [
        ("mino:1500:1", 3),
        ("mino:165536:65536", 5),
        ("mino:700000:65536", 9),
    ]


def test_owned_by_does_not_include_all_lines() -> None:
    # moby's "ALL" is a query ("every line"), never a line owner matching everyone
    parsed = parse_subid(FILE)
    assert all(e.owner != "ALL" for e in parsed.owned_by("mino"))
    assert [e.text() for e in parsed.owned_by("bob")] == ["bob:100000:65536"]
    assert [e.text() for e in parsed.owned_by("ALL")] == ["ALL:300000:65536"]


@pytest.mark.parametrize("name", ["nobody", "", "mino ", "min", "mino:", "1501"])
def test_owned_by_matches_names_exactly(name: str) -> None:
    assert parse_subid(FILE).owned_by(name) == ()


def test_owned_by_is_case_sensitive() -> None:
    assert [e.line for e in parse_subid(FILE).owned_by("Mino")] == [8]


def test_owned_by_skips_problem_lines() -> None:
    parsed = parse_subid("mino:1500:1\nmino:x:1\nmino:100000:65536\n")
    assert [e.line for e in parsed.owned_by("mino")] == [1, 3]


def test_where() -> None:
    assert parse_subid("", "/etc/subgid").where(7) == "/etc/subgid:7"


# --- predict_map ----------------------------------------------------------------


def test_own_line_first_makes_container_root_the_user() -> None:
    idmap = predict_map(parse_subid("mino:1500:1\nmino:100000:65536\n").owned_by("mino"))
    assert idmap == (IdRange(0, 1500, 1), IdRange(1, 100000, 65536))
    assert to_host(idmap, 0) == 1500
    assert to_host(idmap, 1) == 100000
    assert to_host(idmap, 5) == 100004  # the leak seen on the test machine
    assert to_host(idmap, 65536) == 165535
    assert to_host(idmap, 65537) is None


def test_reversed_order_makes_container_root_100000() -> None:
    idmap = predict_map(parse_subid("mino:100000:65536\nmino:1500:1\n").owned_by("mino"))
    assert idmap == (IdRange(0, 100000, 65536), IdRange(65536, 1500, 1))
    assert to_host(idmap, 0) == 100000
    assert to_host(idmap, 65536) == 1500
    assert to_container(idmap, 1500) == 65536


def test_predict_map_does_not_sort() -> None:
    entries = [SubidEntry("m", 300, 10, 1), SubidEntry("m", 100, 5, 2), SubidEntry("m", 200, 1, 3)]
    assert predict_map(entries) == (IdRange(0, 300, 10), IdRange(10, 100, 5), IdRange(15, 200, 1))


def test_predict_map_empty() -> None:
    assert predict_map([]) == ()
    assert predict_map(iter([])) == ()


def test_predict_map_accepts_a_generator() -> None:
    gen = (SubidEntry("m", s, 2, i) for i, s in enumerate([10, 20], 1))
    assert predict_map(gen) == (IdRange(0, 10, 2), IdRange(2, 20, 2))


# --- IdRange / to_host / to_container ---------------------------------------------

MAP = (IdRange(0, 1500, 1), IdRange(1, 100000, 65536))


@pytest.mark.parametrize(
    ("container_id", "host_id"),
    [
        (0, 1500),
        (1, 100000),
        (2, 100001),
        (1000, 100999),
        (65535, 165534),
        (65536, 165535),  # last mapped id
        (65537, None),  # one past
        (-1, None),
        (2**32, None),
    ],
)
def test_to_host(container_id: int, host_id: int | None) -> None:
    assert to_host(MAP, container_id) == host_id


@pytest.mark.parametrize(
    ("host_id", "container_id"),
    [
        (1500, 0),
        (1499, None),
        (1501, None),
        (99999, None),
        (100000, 1),
        (100004, 5),
        (165535, 65536),
        (165536, None),
        (0, None),  # host root is never visible inside
        (-1, None),
    ],
)
def test_to_container(host_id: int, container_id: int | None) -> None:
    assert to_container(MAP, host_id) == container_id


@pytest.mark.parametrize("cid", [0, 1, 5, 1000, 65535, 65536])
def test_translation_round_trips(cid: int) -> None:
    host = to_host(MAP, cid)
    assert host is not None
    assert to_container(MAP, host) == cid


def test_translation_on_an_empty_map() -> None:
    assert to_host((), 0) is None
    assert to_container((), 0) is None


def test_idrange_edges() -> None:
    r = IdRange(10, 1000, 5)
    assert [r.host_of(c) for c in (9, 10, 14, 15)] == [None, 1000, 1004, None]
    assert [r.container_of(h) for h in (999, 1000, 1004, 1005)] == [None, 10, 14, None]


def test_idrange_of_the_last_valid_id() -> None:
    r = IdRange(0, LAST_ID, 1)
    assert r.host_of(0) == LAST_ID
    assert r.container_of(LAST_ID) == 0
    assert r.container_of(2**32 - 1) is None


def test_first_matching_range_wins_on_overlapping_maps() -> None:
    overlapping = (IdRange(0, 100, 10), IdRange(10, 100, 10))
    assert to_container(overlapping, 105) == 5


# --- parse_proc_map / format_map / map_rows -------------------------------------


def test_parse_proc_map_real_kernel_format() -> None:
    text = "         0       1500          1\n         1     100000      65536\n"
    assert parse_proc_map(text) == MAP


def test_parse_proc_map_identity_map_of_the_host() -> None:
    assert parse_proc_map("         0          0 4294967295\n") == (IdRange(0, 0, 4294967295),)


@pytest.mark.parametrize(
    "text",
    [
        "0 1500 1\n1 100000 65536",  # no trailing newline, no padding
        "\n0 1500 1\n\n1 100000 65536\n\n",  # blank lines
        "0\t1500\t1\n1\t100000\t65536\n",
        "   \n0 1500 1\n1 100000 65536\n",
    ],
)
def test_parse_proc_map_tolerates_layout(text: str) -> None:
    assert parse_proc_map(text) == MAP


def test_parse_proc_map_empty() -> None:
    assert parse_proc_map("") == ()
    assert parse_proc_map("\n") == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 1500\n", "id map line 1: expected 'CONTAINER HOST COUNT', found '0 1500'"),
        ("0 1500 1\n1 2 3 4\n", "id map line 2: expected 'CONTAINER HOST COUNT', found '1 2 3 4'"),
        ("0 x 1\n", "id map line 1: expected 'CONTAINER HOST COUNT', found '0 x 1'"),
        ("0 -1 1\n", "id map line 1: expected 'CONTAINER HOST COUNT', found '0 -1 1'"),
        ("0 １ 1\n", "id map line 1: expected 'CONTAINER HOST COUNT', found '0 １ 1'"),
        ("\n\n0:1:1\n", "id map line 3: expected 'CONTAINER HOST COUNT', found '0:1:1'"),
    ],
)
def test_parse_proc_map_rejects_what_the_kernel_never_writes(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_proc_map(text)
    assert str(info.value) == message


def test_format_map() -> None:
    assert format_map(MAP) == "0 1500 1\n1 100000 65536"
    assert format_map(()) == ""


def test_format_then_parse_round_trips() -> None:
    idmap = (IdRange(0, 100000, 65536), IdRange(65536, 1500, 1), IdRange(65537, 200000, 10))
    assert parse_proc_map(format_map(idmap)) == idmap


def test_predicted_map_equals_what_the_kernel_showed() -> None:
    predicted = predict_map(parse_subid("mino:1500:1\nmino:100000:65536\n").owned_by("mino"))
    seen = parse_proc_map("         0       1500          1\n         1     100000      65536\n")
    assert predicted == seen


def test_map_rows() -> None:
    assert map_rows(MAP) == [("0", "1500", "1"), ("1–65536", "100000–165535", "65536")]
    assert map_rows((IdRange(0, 5, 2),)) == [("0–1", "5–6", "2")]
    assert map_rows(()) == []


# --- account_overlaps -----------------------------------------------------------

ACCOUNTS = [
    Account("root", 0),
    Account("daemon", 1),
    Account("mino", 1500),
    Account("alice", 1501),
    Account("bob", 1001),
    Account("nobody", 65534),
]


def entry(text: str, line: int = 1) -> SubidEntry:
    """The one entry of ``text``, as if it stood on ``line``."""
    (parsed,) = parse_subid(text + "\n").entries
    return dataclasses.replace(parsed, line=line)


def messages(found: list[Overlap], path: str = "/etc/subuid") -> list[str]:
    return [o.message(path) for o in found]


def test_own_uid_single_line_is_fine() -> None:
    entries = [entry("mino:1500:1", 1), entry("mino:100000:65536", 2)]
    assert account_overlaps(entries, ACCOUNTS, own_id=1500) == []


def test_own_uid_single_line_is_fine_for_gids_too() -> None:
    groups = [Account("mino", 1500), Account("staff", 50)]
    assert account_overlaps([entry("mino:1500:1")], groups, own_id=1500, kind="gid") == []


def test_single_line_of_someone_elses_uid_is_flagged() -> None:
    found = account_overlaps([entry("mino:1501:1", 3)], ACCOUNTS, own_id=1500)
    assert messages(found) == ["/etc/subuid:3 mino:1501:1 overlaps account alice (uid 1501)"]


def test_seed_style_range_names_another_account() -> None:
    found = account_overlaps([entry("mino:1000:65536", 2)], ACCOUNTS, own_id=1500)
    assert messages(found) == ["/etc/subuid:2 mino:1000:65536 overlaps account bob (uid 1001)"]


def test_seed_style_range_starting_at_own_uid() -> None:
    accounts = [Account("mino", 1000), Account("bob", 1001), Account("carol", 1002)]
    found = account_overlaps([entry("mino:1000:65536")], accounts, own_id=1000)
    assert messages(found) == ["/etc/subuid:1 mino:1000:65536 overlaps account bob (uid 1001)"]
    assert found[0].entry == entry("mino:1000:65536")
    assert found[0].with_what == "account bob (uid 1001)"


def test_seed_style_range_covering_only_own_uid_is_still_flagged() -> None:
    found = account_overlaps([entry("mino:1000:65536")], [Account("mino", 1000)], own_id=1000)
    assert messages(found) == ["/etc/subuid:1 mino:1000:65536 overlaps account mino (uid 1000)"]


def test_account_overlaps_kind_in_message() -> None:
    found = account_overlaps([entry("mino:0:10", 4)], [Account("root", 0)], own_id=1500, kind="gid")
    assert messages(found, "/etc/subgid") == ["/etc/subgid:4 mino:0:10 overlaps account root (gid 0)"]


def test_one_overlap_per_entry_naming_the_lowest_account() -> None:
    unsorted = [Account("z", 70000), Account("y", 65534), Account("x", 100001)]
    found = account_overlaps([entry("mino:60000:50000")], unsorted, own_id=1500)
    assert [o.with_what for o in found] == ["account y (uid 65534)"]


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("mino:100000:65536", False),
        ("mino:1500:1", False),
        ("mino:1501:1", True),
        ("mino:1499:2", True),  # wider than one id and covers the own uid
        ("mino:1502:100", False),
        ("mino:65534:1", True),  # nobody
        ("mino:0:1", True),  # root
        ("mino:2:999", False),  # 2..1000: between daemon (1) and bob (1001)
        ("mino:2:1000", True),  # 2..1001: reaches bob
        ("mino:2:1000000", True),
    ],
)
def test_account_overlaps_table(text: str, flagged: bool) -> None:
    assert bool(account_overlaps([entry(text)], ACCOUNTS, own_id=1500)) is flagged


def test_account_overlaps_in_entry_order() -> None:
    entries = [entry("mino:1501:1", 1), entry("mino:100000:65536", 2), entry("mino:0:1", 3)]
    assert messages(account_overlaps(entries, ACCOUNTS, own_id=1500)) == [
        "/etc/subuid:1 mino:1501:1 overlaps account alice (uid 1501)",
        "/etc/subuid:3 mino:0:1 overlaps account root (uid 0)",
    ]


def test_account_overlaps_accepts_a_generator_of_accounts() -> None:
    gen = (a for a in ACCOUNTS)
    entries = [entry("mino:1501:1", 1), entry("mino:0:1", 2)]
    assert len(account_overlaps(entries, gen, own_id=1500)) == 2


def test_account_overlaps_no_accounts() -> None:
    assert account_overlaps([entry("mino:0:1000000")], [], own_id=1500) == []


# --- seed_style -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "own", "flagged"),
    [
        ("mino:1000:65536", 1000, True),  # the blog-post mapping
        ("mino:0:65536", 1000, True),  # covers the own uid
        ("mino:999:2", 1000, True),
        ("mino:1000:1", 1000, False),  # own single line
        ("mino:1001:65536", 1000, False),  # starts after
        ("mino:100000:65536", 1000, False),
        ("mino:934464:65536", 1000000, False),  # ends right before (end is exclusive)
        ("mino:934465:65536", 1000000, True),  # last id is the own uid
    ],
)
def test_seed_style(text: str, own: int, flagged: bool) -> None:
    e = entry(text)
    assert seed_style([e], own) == ([e] if flagged else [])


def test_seed_style_on_a_parsed_file() -> None:
    parsed = parse_subid("mino:1000:1\nmino:1000:65536\nmino:100000:65536\n")
    assert [e.line for e in seed_style(parsed.owned_by("mino"), 1000)] == [2]


# --- range_overlaps -----------------------------------------------------------------


def test_range_overlap_names_the_other_owner_and_place() -> None:
    parsed = parse_subid("bob:100000:65536\nmino:1500:1\nmino:150000:65536\n")
    found = range_overlaps(parsed.owned_by("mino"), parsed.entries, parsed.path)
    assert messages(found, parsed.path) == [
        "/etc/subuid:3 mino:150000:65536 overlaps bob's range bob:100000:65536 at /etc/subuid:1"
    ]


def test_range_overlap_path_is_the_one_given() -> None:
    parsed = parse_subid("bob:100000:10\nmino:100005:10\n", "/etc/subgid")
    found = range_overlaps(parsed.owned_by("mino"), parsed.entries, parsed.path)
    assert [o.with_what for o in found] == ["bob's range bob:100000:10 at /etc/subgid:1"]


def test_range_overlap_reports_the_first_other_in_file_order() -> None:
    parsed = parse_subid("carol:100010:10\nbob:100000:10\nmino:100000:100\n")
    found = range_overlaps(parsed.owned_by("mino"), parsed.entries, parsed.path)
    assert messages(found) == [
        "/etc/subuid:3 mino:100000:100 overlaps carol's range carol:100010:10 at /etc/subuid:1"
    ]


def test_all_line_counts_as_another_owner() -> None:
    parsed = parse_subid("ALL:100000:65536\nmino:100000:65536\n")
    found = range_overlaps(parsed.owned_by("mino"), parsed.entries, parsed.path)
    assert messages(found) == [
        "/etc/subuid:2 mino:100000:65536 overlaps ALL's range ALL:100000:65536 at /etc/subuid:1"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bob:100000:65536\nmino:165536:65536\n", 0),  # adjacent after
        ("bob:165536:65536\nmino:100000:65536\n", 0),  # adjacent before
        ("bob:165535:1\nmino:100000:65536\n", 1),  # shares the last id
        ("bob:100000:1\nmino:100000:65536\n", 1),  # shares the first id
        ("bob:0:4294967295\nmino:1500:1\nmino:100000:65536\n", 2),  # bob has everything
        ("mino:100000:65536\nmino:100000:65536\n", 0),  # own duplicates are parse problems
        ("", 0),
    ],
)
def test_range_overlaps_table(text: str, expected: int) -> None:
    parsed = parse_subid(text)
    assert len(range_overlaps(parsed.owned_by("mino"), parsed.entries, parsed.path)) == expected


def test_overlap_message_format() -> None:
    o = Overlap(SubidEntry("mino", 1, 2, 9), "something")
    assert o.message("/x") == "/x:9 mino:1:2 overlaps something"


# --- allocate -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("taken", "count", "lo", "hi", "expected"),
    [
        # empty
        ([], 65536, 100000, 600100000, 100000),
        ([], 1, 0, 0, 0),
        # a taken span at the start pushes past it
        ([(100000, 165536)], 65536, 100000, 600100000, 165536),
        # adjacent spans are jumped over together
        ([(100000, 165536), (165536, 231072)], 65536, 100000, 600100000, 231072),
        # a gap too small is skipped
        ([(100000, 165536), (200000, 300000)], 65536, 100000, 600100000, 300000),
        # an exactly-fitting gap is used
        ([(100000, 165536), (231072, 300000)], 65536, 100000, 600100000, 165536),
        # one id short of fitting
        ([(100000, 165536), (231071, 300000)], 65536, 100000, 600100000, 300000),
        # unsorted input
        ([(231072, 300000), (100000, 165536)], 65536, 100000, 600100000, 165536),
        # overlapping taken spans
        ([(100000, 200000), (150000, 170000), (190000, 250000)], 10, 100000, 600100000, 250000),
        # a span nested in another
        ([(100000, 300000), (120000, 130000)], 10, 100000, 600100000, 300000),
        # spans below lo are ignored, one straddling lo pushes
        ([(0, 1000), (5000, 100010)], 10, 100000, 600100000, 100010),
        ([(0, 100000)], 10, 100000, 600100000, 100000),
        # spans beyond hi do not matter
        ([(700000000, 800000000)], 65536, 100000, 600100000, 100000),
        # empty and inverted spans are ignored
        ([(100000, 100000), (200000, 100000)], 10, 100000, 600100000, 100000),
        # hi bounds the last id: exactly fits
        ([], 65536, 100000, 165535, 100000),
        # ... one short
        ([], 65536, 100000, 165534, None),
        # fitting the last gap below hi exactly
        ([(100000, 200000)], 100, 100000, 200099, 200000),
        ([(100000, 200000)], 100, 100000, 200098, None),
        # full
        ([(0, 2**32 - 1)], 1, 0, LAST_ID, None),
        # the last valid id is still available
        ([(0, LAST_ID)], 1, 0, LAST_ID, LAST_ID),
        # hi beyond the last valid id is capped
        ([(0, LAST_ID)], 2, 0, 2**40, None),
        ([], 1, LAST_ID, 2**40, LAST_ID),
        ([], 1, 2**32 - 1, 2**40, None),
        # lo above hi, nonsense counts
        ([], 1, 10, 9, None),
        ([], 0, 100000, 600100000, None),
        ([], -5, 100000, 600100000, None),
    ],
)
def test_allocate(
    taken: list[tuple[int, int]], count: int, lo: int, hi: int, expected: int | None
) -> None:
    assert allocate(taken, count, lo, hi) == expected


def test_allocate_defaults_are_shadows() -> None:
    assert allocate([]) == 100000
    assert allocate([(100000, 600100000)]) is None
    assert allocate([(100000, 600034464)]) == 600034464  # 600034464 + 65535 == 600100000 == hi


def test_allocate_accepts_a_generator_and_entries() -> None:
    parsed = parse_subid("bob:100000:65536\ncarol:165536:65536\n")
    assert allocate((e.start, e.end) for e in parsed.entries) == 231072


def test_allocated_range_does_not_overlap_anything() -> None:
    taken = [(100000, 165536), (170000, 170001), (300000, 400000)]
    for count, expected in [(4464, 165536), (4465, 170001), (129999, 170001), (130000, 400000)]:
        start = allocate(taken, count)
        assert start == expected
        new = SubidEntry("new", start, count, 1)
        assert not any(new.overlaps(s, e) for s, e in taken)


# --- login.defs ---------------------------------------------------------------------

LOGIN_DEFS = """\
#
# /etc/login.defs - Configuration control definitions for the login package.
#
MAIL_DIR        /var/mail
UID_MIN                  1000
UID_MAX                 60000
#SUB_UID_MIN		  100000
SUB_UID_MIN		  200000
SUB_UID_MAX		  300000000
SUB_UID_COUNT		  65536
  SUB_GID_MIN  "400000"
ENCRYPT_METHOD SHA512
LONELY_KEY
"""


def test_parse_login_defs() -> None:
    assert parse_login_defs(LOGIN_DEFS) == {
        "MAIL_DIR": "/var/mail",
        "UID_MIN": "1000",
        "UID_MAX": "60000",
        "SUB_UID_MIN": "200000",
        "SUB_UID_MAX": "300000000",
        "SUB_UID_COUNT": "65536",
        "SUB_GID_MIN": "400000",
        "ENCRYPT_METHOD": "SHA512",
    }


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("KEY value", "value"),
        ("KEY\tvalue", "value"),
        ("  KEY   value   ", "value"),
        ('KEY "value"', "value"),
        ('KEY "two words"', "two words"),
        ("KEY two words", "two words"),
        ("KEY 100000 # not a comment", "100000 # not a comment"),  # shadow has no inline comments
        ('KEY "a"b', "a"),
        ("KEY value\r", "value"),
    ],
)
def test_login_defs_value_reading(line: str, value: str) -> None:
    assert parse_login_defs(line + "\n") == {"KEY": value}


@pytest.mark.parametrize("text", ["", "\n", "# KEY value\n", "   # KEY value\n", "KEY\n", "KEY   \n"])
def test_login_defs_nothing_to_read(text: str) -> None:
    assert parse_login_defs(text) == {}


def test_login_defs_last_occurrence_wins() -> None:
    assert parse_login_defs("SUB_UID_MIN 1\nSUB_UID_MIN 2\n") == {"SUB_UID_MIN": "2"}


def test_login_defs_keys_are_case_sensitive() -> None:
    assert parse_login_defs("sub_uid_min 5\n") == {"sub_uid_min": "5"}
    assert sub_bounds(parse_login_defs("sub_uid_min 5\n")) == (100000, 600100000, 65536)


def test_sub_bounds_from_file() -> None:
    defs = parse_login_defs(LOGIN_DEFS)
    assert sub_bounds(defs) == (200000, 300000000, 65536)
    assert sub_bounds(defs, "SUB_UID") == (200000, 300000000, 65536)
    assert sub_bounds(defs, "SUB_GID") == (400000, 600100000, 65536)


def test_sub_bounds_defaults() -> None:
    assert sub_bounds({}) == (DEFAULT_SUB_MIN, DEFAULT_SUB_MAX, DEFAULT_SUB_COUNT)
    assert sub_bounds({}, "SUB_GID") == (100000, 600100000, 65536)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("150000", 150000),
        ("0", 0),
        ("0x186a0", 100000),  # shadow-utils reads numbers with strtoul(..., 0)
        ("0X186A0", 100000),
        ("0100000", 32768),  # octal
        ("18446744073709551615", 2**64 - 1),
        # garbage -> default
        ("", 100000),
        ("lots", 100000),
        ("-1", 100000),
        ("+5", 100000),
        ("1e5", 100000),
        ("100000 # comment", 100000),
        ("100_000", 100000),
        ("100000.0", 100000),
        ("08", 100000),  # not octal
        ("0x", 100000),
        ("0xg", 100000),
        ("１００", 100000),  # unicode digits
        ("²", 100000),
        ("18446744073709551616", 100000),  # past ULONG_MAX
        ("9" * 5000, 100000),  # int() would refuse this
    ],
)
def test_sub_bounds_number_reading(value: str, expected: int) -> None:
    assert sub_bounds({"SUB_UID_MIN": value})[0] == expected


def test_sub_bounds_garbage_only_affects_its_key() -> None:
    defs = parse_login_defs("SUB_UID_MIN junk\nSUB_UID_MAX 700000000\nSUB_UID_COUNT 0x10000\n")
    assert sub_bounds(defs) == (100000, 700000000, 65536)


def test_bounds_feed_allocate() -> None:
    lo, hi, count = sub_bounds(parse_login_defs("SUB_UID_MIN 200000\nSUB_UID_MAX 265535\n"))
    assert allocate([], count, lo, hi) == 200000
    assert allocate([(200000, 200001)], count, lo, hi) is None


# --- the whole story, end to end -------------------------------------------------------


def test_useradd_then_usermod_append_gives_the_wrong_root() -> None:
    # useradd gave a range; `usermod --add-subuids 1500-1500` appends after it
    parsed = parse_subid("mino:100000:65536\nmino:1500:1\n")
    idmap = predict_map(parsed.owned_by("mino"))
    assert to_host(idmap, 0) == 100000
    assert map_rows(idmap) == [("0–65535", "100000–165535", "65536"), ("65536", "1500", "1")]


def test_healthy_file_has_no_findings() -> None:
    parsed = parse_subid("bob:100000:65536\nmino:1500:1\nmino:165536:65536\n")
    mine = parsed.owned_by("mino")
    assert parsed.problems == ()
    assert account_overlaps(mine, ACCOUNTS, own_id=1500) == []
    assert seed_style(mine, 1500) == []
    assert range_overlaps(mine, parsed.entries, parsed.path) == []
    assert format_map(predict_map(mine)) == "0 1500 1\n1 165536 65536"
