"""The lme4 bar language: every form of lme4's bars (and lme4 2.0's / glmmTMB's structures), and
errors that point at the problem."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmix import FormulaError, parse_formula


def bars(text: str) -> list[tuple[str, str]]:
    return [(b.lhs, b.group_name) for b in parse_formula(text).bars]


@pytest.mark.parametrize(
    ("formula", "fixed", "expected"),
    [
        ("y ~ x + (1 | g)", "x", [("1", "g")]),
        ("y ~ x + (x | g)", "x", [("x", "g")]),
        ("y ~ x + (1 + x | g)", "x", [("1 + x", "g")]),
        ("y ~ x + (0 + x | g)", "x", [("0 + x", "g")]),
        ("y ~ x + (-1 + x | g)", "x", [("-1 + x", "g")]),
        ("y ~ x + (x || g)", "x", [("1", "g"), ("0 + x", "g")]),
        ("y ~ (x1 + x2 || g)", "1", [("1", "g"), ("0 + x1", "g"), ("0 + x2", "g")]),
        ("y ~ 1 + (1 | a/b)", "1", [("1", "a"), ("1", "a:b")]),
        ("y ~ 1 + (1 | a/b/c)", "1", [("1", "a"), ("1", "a:b"), ("1", "a:b:c")]),
        ("y ~ 1 + (1 | a:b)", "1", [("1", "a:b")]),
        ("y ~ (1 | a) + (1 | b)", "1", [("1", "a"), ("1", "b")]),
        ("y ~ x + (0 + f | g)", "x", [("0 + f", "g")]),
        ("y ~ C(f) * x + np.log(z) + {x**2} + (1 | g)", "C(f) * x + np.log(z) + {x**2}", [("1", "g")]),
        ("y ~ `odd name` + (1 | `my group`)", "`odd name`", [("1", "my group")]),
        ("y ~ x - 1 + (1 | g)", "x - 1", [("1", "g")]),
        ("y ~ 0 + x + ((1 | g))", "0 + x", [("1", "g")]),
        ("y ~ {a | b} + (1 | g)", "{a | b}", [("1", "g")]),
    ],
)
def test_forms(formula: str, fixed: str, expected: list[tuple[str, str]]) -> None:
    p = parse_formula(formula)
    assert p.fixed == fixed
    assert bars(formula) == expected


def test_offset_and_cbind() -> None:
    p = parse_formula("cbind(s, n - s) ~ x + offset(log(t)) + (1 | g)")
    assert p.cbind == ("s", "n - s")
    assert p.offsets == ("log(t)",)
    assert p.fixed == "x"
    assert p.response == ""


@pytest.mark.parametrize(
    ("formula", "message", "position"),
    [
        ("y ~ x + (1 | g", "unbalanced '('", 8),
        ("y ~ x)", "unbalanced ')'", 5),
        ("y ~ x | g", "needs parentheses: write y ~ (x | g)", 6),
        ("Yield ~ 1 | Batch", "needs parentheses: write Yield ~ (1 | Batch)", 10),  # lme4's tests' form
        ("y ~ x + 1 | g", "y ~ (x + 1 | g) (as lme4 reads it: all of x + 1 random), or y ~ x + (1 | g)", 10),
        ("y ~ x + (0 | g)", "the term (0 | g) has no random effects", 9),
        ("y ~ x + (-1 | g)", "write (1 | g) for a random intercept, or drop the term", 9),
        ("reaction time ~ x + (1 | g)", "if 'reaction time' is one column name, back-quote it", 0),
        ("y ~ mean rt + (1 | g)", "back-quote it: `mean rt`", 4),
        ("y ~ x:(1 | g)", "'|' outside a random-effects term", 9),
        ("y ~ x + ( | g)", "nothing on the left of '|'", 10),
        ("y ~ x + (1 | )", "nothing on the right of '|'", 11),
        ("y ~ (1 | g | h)", "one bar", 11),
        ("y ~ (1 | a + b)", "grouping factor must be a column name", 9),
        ("y ~ I(x^2)", "I(x**2)", 7),
        ("~ x", "nothing on the left of '~'", 0),
        ("y ~ ", "nothing on the right of '~'", 2),
        ("y ~ x + + z", "empty term", 8),
        ("y ~ x - (1 | g)", "cannot be subtracted", 8),
        ("y ~ x ~ z", "one '~'", 6),
        ("y x", "needs '~'", None),
        ("y ~ x + 'abc", "unclosed quote", 8),
    ],
)
def test_errors_point_at_the_problem(formula: str, message: str, position: int | None) -> None:
    with pytest.raises(FormulaError) as err:
        parse_formula(formula)
    assert message in str(err.value)
    assert err.value.position == position
    if position is not None:
        caret_line = str(err.value).splitlines()[-1]
        assert caret_line.index("^") - 4 == position


def test_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_formula("y ~ (1 | )")


ALPHABET = "yxgab01 ~|()+-*/:`'{}[],.^!@#$%&=_\\\n\t" + "log"


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_no_string_raises_anything_but_formula_error(text: str) -> None:
    try:
        parse_formula(text)
    except FormulaError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["x", "a", "(1 | g)", "(x || g)", "(0 + x | a/b)", "log(x)", "(1|", ")", "|", "-", "~"]
        ),
        max_size=8,
    ),
)
def test_token_soup_raises_only_formula_error(tokens: list[str]) -> None:
    try:
        parse_formula("y ~ " + " + ".join(tokens))
    except FormulaError:
        pass


def test_r_names_with_a_dot_before_a_digit_parse() -> None:
    """``x.1`` is no Python (a dot before a digit), only R's name: the parser lets it through."""
    assert parse_formula("y ~ x.1 + I(x.1 * 1.5) + (x.1 | g.2)").fixed == "x.1 + I(x.1 * 1.5)"


def test_quote_dotted_leaves_numbers_strings_and_other_names() -> None:
    from hmix.formula import quote_dotted

    p = quote_dotted(
        parse_formula('y ~ I(a.b * 1.5) + Q("a.b") + np.log(c.d) + (a.b | g)'), ["a.b", "y", "g"]
    )
    assert p.fixed == 'I(`a.b` * 1.5) + Q("a.b") + np.log(c.d)'
    assert p.bars[0].lhs == "`a.b`"
