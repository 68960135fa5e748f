"""The lme4 formula language: split random-effects bars and offsets from the fixed part.

This module is the only one that talks to formulaic's parser. It never looks at data: it turns a
formula string into a ``ParsedFormula`` whose pieces (response, fixed part, bar terms,
offsets) are formulaic formulas or column names, and reports every problem as a
``FormulaError`` that points at its position.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache

from formulaic import Formula

from .errors import FormulaError

__all__ = ["BarTerm", "ParsedFormula", "parse_formula", "quote_dotted"]

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}
_NAME = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
_SPACED_NAME = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*(?: +[A-Za-z_.][A-Za-z0-9_.]*)+")
_R_ONLY = re.compile(r"\.[0-9]")  # (a dot before a digit: no attribute, so only R's name)
# quoted text, back-quoted names, and the names outside them (R's: "x.1", ".a"; not "1.5")
_TOKEN = re.compile(
    r"`[^`]*`|'[^']*'|\"[^\"]*\"|(?<![A-Za-z0-9_.])((?:[A-Za-z_]|\.[A-Za-z_.])[A-Za-z0-9_.]*)"
)


@dataclass(frozen=True)
class BarTerm:
    """One random-effects term ``(lhs | group)`` after expansion of ``||`` and ``/``.

    Attributes
    ----------
    lhs : str
        A formulaic formula for the term's model-matrix columns (``"1"``, ``"1 + Days"``, ``"0 + f"``).
    group : tuple of str
        The columns whose observed combinations define the grouping factor (``("a", "b")`` for ``a:b``).
    text : str
        The term as the user wrote it, for messages.
    structure : str
        Its covariance structure: ``"us"`` (unstructured, for ``(x | g)`` and ``us(x | g)``),
        ``"diag"``, ``"cs"`` or ``"ar1"`` (see ``hmix.covariance``).
    hom : bool
        One common variance for all columns (``hom = TRUE``; ``ar1``'s default).
    """

    lhs: str
    group: tuple[str, ...]
    text: str
    structure: str = "us"
    hom: bool = False

    @property
    def group_name(self) -> str:
        """The grouping factor's display name, ``a:b`` for an interaction."""
        return ":".join(self.group)


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into the parts hmix materializes separately.

    Attributes
    ----------
    text : str
        The formula as written.
    response : str
        The left side (a column name or a formulaic expression); empty for ``cbind`` responses.
    cbind : tuple of str or None
        The two expressions of a ``cbind(successes, failures)`` response.
    fixed : str
        The fixed-effects right side, a formulaic formula (``"1"`` when only bars were given).
    bars : tuple of BarTerm
        Random-effects terms, ``||`` split into uncorrelated terms and ``a/b`` into ``a + a:b``;
        ``us()``, ``diag()``, ``cs()`` and ``ar1()`` terms carry their structure.
    offsets : tuple of str
        The expressions inside ``offset(...)`` terms.

    Examples
    --------
    >>> import hmix
    >>> f = hmix.parse_formula("y ~ x + (1 | a/b)")
    >>> f.fixed, [b.group_name for b in f.bars]
    ('x', ['a', 'a:b'])
    """

    text: str
    response: str
    cbind: tuple[str, str] | None
    fixed: str
    bars: tuple[BarTerm, ...]
    offsets: tuple[str, ...]


@dataclass(frozen=True)
class _Piece:
    sign: str  # "+", "-" or "" (first summand)
    text: str  # stripped text of the summand
    start: int  # position of text in the formula


def _scan(text: str, base: int = 0) -> list[int]:
    """Depth (parentheses, brackets, braces) before each character; checks balance and quotes.

    Characters inside quotes, back-quotes and braces get depth -1 so that no operator is found
    there.
    """
    depths: list[int] = []
    stack: list[tuple[str, int]] = []
    quote: tuple[str, int] | None = None
    for i, ch in enumerate(text):
        if quote is not None:
            depths.append(-1)
            if ch == quote[0]:
                quote = None
            continue
        in_code = any(c == "{" for c, _ in stack)
        if ch in "'\"`":
            quote = (ch, i)
            depths.append(-1)
        elif ch in _OPEN:
            depths.append(-1 if in_code else len(stack))
            stack.append((ch, i))
        elif ch in _CLOSE:
            if not stack or stack[-1][0] != _CLOSE[ch]:
                raise FormulaError(f"unbalanced '{ch}': nothing opens it", None, base + i)
            stack.pop()
            depths.append(-1 if any(c == "{" for c, _ in stack) or ch == "}" else len(stack))
        else:
            depths.append(-1 if in_code else len(stack))
    if quote is not None:
        raise FormulaError(f"unclosed quote {quote[0]}", None, base + quote[1])
    if stack:
        ch, i = stack[-1]
        raise FormulaError(f"unbalanced '{ch}': it is never closed with '{_OPEN[ch]}'", None, base + i)
    return depths


def _split_top(text: str, depths: list[int], seps: str) -> list[tuple[int, int, str]]:
    """Split at top-level (depth 0) separators; returns (start, end, separator-before)."""
    out: list[tuple[int, int, str]] = []
    start, before = 0, ""
    for i, ch in enumerate(text):
        if depths[i] == 0 and ch in seps:
            out.append((start, i, before))
            start, before = i + 1, ch
    out.append((start, len(text), before))
    return out


def _strip(text: str, start: int, end: int) -> tuple[str, int]:
    piece = text[start:end]
    lead = len(piece) - len(piece.lstrip())
    return piece.strip(), start + lead


def _wrapped(text: str) -> bool:
    """Whether one pair of parentheses encloses the whole of ``text``."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depths = _scan(text)
    return not any(d == 0 for d in depths[1:-1])


def _unwrap(text: str, keep: int = 0) -> str:
    """Remove redundant parentheses around ``text``, keeping ``keep`` pairs."""
    while _wrapped(text) and (keep == 0 or _wrapped(text[1:-1].strip())):
        text = text[1:-1].strip()
    return text


def _summands(rhs: str, base: int) -> list[_Piece]:
    depths = _scan(rhs, base)
    pieces = []
    for start, end, sep in _split_top(rhs, depths, "+-"):
        text, pos = _strip(rhs, start, end)
        pieces.append(_Piece(sep, text, base + pos))
    return pieces


def _bar_position(text: str) -> int | None:
    """Position of a '|' anywhere outside quotes and code blocks."""
    depths = _scan(text)
    for i, ch in enumerate(text):
        if ch == "|" and depths[i] >= 0:
            return i
    return None


def as_code(expr: str) -> str:
    """``expr`` as a formulaic Python block ``{expr}``, unless it is one already."""
    return expr if expr.startswith("{") and expr.endswith("}") else "{" + expr + "}"


def _check_formulaic(expr: str, formula: str, start: int, what: str) -> None:
    """Ask formulaic to parse ``expr``; turn any failure into a FormulaError."""
    # R's names such as x.1 are no Python; they are quoted once the data show them to be columns
    r_names = frozenset(t for t in (m.group(1) for m in _TOKEN.finditer(expr)) if t and _R_ONLY.search(t))
    try:
        Formula(_quote_names(expr, r_names) if r_names else expr)
    except Exception as exc:  # formulaic raises many kinds; all mean the same to the user
        msg = str(exc).split("\n")[0].strip() or type(exc).__name__
        spaced = _SPACED_NAME.search(
            _TOKEN.sub(lambda m: m.group(0) if m.group(1) else "_" * len(m.group(0)), expr)
        )
        if spaced is not None:
            name = expr[spaced.start() : spaced.end()]
            msg = f"if '{name}' is one column name, back-quote it: `{name}`"
        raise FormulaError(f"cannot parse the {what} '{expr}': {msg}", formula, start) from None


def _parse_group(text: str, formula: str, start: int) -> list[tuple[str, ...]]:
    """``a``, ``a:b``, ``a/b``, ``a/b/c`` (and back-quoted names) -> list of grouping tuples."""
    text = _unwrap(text)
    depths = _scan(text)
    nests: list[tuple[str, ...]] = []
    for s, e, _ in _split_top(text, depths, "/"):
        part, ppos = _strip(text, s, e)
        names: list[str] = []
        for s2, e2, _ in _split_top(part, _scan(part), ":"):
            name, npos = _strip(part, s2, e2)
            if name.startswith("`") and name.endswith("`") and len(name) > 2:
                names.append(name[1:-1])
            elif _NAME.fullmatch(name):
                names.append(name)
            else:
                shown = name or "(nothing)"
                raise FormulaError(
                    f"the grouping factor must be a column name, or names joined by ':' or '/', "
                    f"not '{shown}'",
                    formula,
                    start + ppos + npos,
                )
        nests.append(tuple(names))
    groups: list[tuple[str, ...]] = []
    acc: tuple[str, ...] = ()
    for nest in nests:
        acc = acc + nest
        groups.append(acc)
    return groups


def _split_uncorrelated(lhs: str) -> list[str]:
    """``x1 + x2 || g`` -> one lhs per formulaic term, as lme4 splits them."""
    terms = [str(t) for t in Formula(lhs)]
    if not terms:
        return []
    return ["1" if t == "1" else f"0 + {t}" for t in terms]


def _parse_bar(
    text: str, inner: str, base: int, formula: str, structure: str = "us", hom: bool = False
) -> list[BarTerm]:
    """The terms of ``inner`` (``lhs | group`` or ``lhs || group``, at position ``base``); ``text``
    is the whole term as written."""
    depths = _scan(inner, base)
    bars = [i for i, ch in enumerate(inner) if ch == "|" and depths[i] == 0]
    double = len(bars) == 2 and bars[1] == bars[0] + 1
    if len(bars) > 2 or (len(bars) == 2 and not double):
        raise FormulaError(
            "a random-effects term has one bar: write (terms | group) or (terms || group)",
            formula,
            base + bars[-1],
        )
    bar = bars[0]
    lhs, lpos = _strip(inner, 0, bar)
    rhs, rpos = _strip(inner, bars[-1] + 1, len(inner))
    if double and structure != "us":
        raise FormulaError(
            f"{structure}() takes one bar: write {structure}({lhs} | {rhs}) (a structure's columns "
            "are one term; (x || g) splits them into uncorrelated terms)",
            formula,
            base + bar,
        )
    if not lhs:
        raise FormulaError(
            "nothing on the left of '|': write (1 | g) for a random intercept", formula, base + bar
        )
    if not rhs:
        raise FormulaError(
            "nothing on the right of '|': name the grouping factor, as in (1 | g)",
            formula,
            base + bars[-1],
        )
    _check_formulaic(lhs, formula, base + lpos, "random-effects terms")
    groups = _parse_group(rhs, formula, base + rpos)
    lhss = _split_uncorrelated(lhs) if double else [lhs]
    if not lhss or not list(Formula(lhs)):
        raise FormulaError(
            f"the term {text} has no random effects ('{lhs}' removes the intercept and leaves "
            f"nothing): write (1 | {rhs}) for a random intercept, or drop the term",
            formula,
            base + lpos,
        )
    return [
        BarTerm(lhs=lhs_, group=g, text=text, structure=structure, hom=hom) for g in groups for lhs_ in lhss
    ]


_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s*\(")
_HOM = re.compile(r"hom\s*=\s*(TRUE|FALSE|True|False|T|F)")
_HOM_DEFAULT = {"us": False, "diag": False, "cs": False, "ar1": True}  # (lme4 2.0's defaults)


def _parse_structured(body: str, pos: int, formula: str) -> list[BarTerm] | None:
    """``name(lhs | group[, hom = TRUE])`` at position ``pos``: its terms; None when ``body`` is
    no function call with a bar among its arguments."""
    m = _CALL.match(body)
    if m is None or not _wrapped(body[m.end() - 1 :]):
        return None
    name, args, base = m.group(1), body[m.end() : -1], pos + m.end()
    depths = _scan(args, base)
    if not any(ch == "|" and depths[i] == 0 for i, ch in enumerate(args)):
        return None
    if name not in _HOM_DEFAULT:
        raise FormulaError(
            f"unknown covariance structure {name}(): hmix has us(), diag(), cs() and ar1(), as in "
            "cs(1 + x | g); an unstructured term is (1 + x | g)",
            formula,
            pos,
        )
    parts = _split_top(args, depths, ",")
    hom = _HOM_DEFAULT[name]
    for s, e, _ in parts[1:]:
        arg, apos = _strip(args, s, e)
        flag = _HOM.fullmatch(arg)
        if flag is None:
            raise FormulaError(
                f"{name}() takes the term and hom = TRUE or FALSE, not '{arg}': write "
                f"{name}(x | g) or {name}(x | g, hom = TRUE)",
                formula,
                base + apos,
            )
        hom = flag.group(1) in ("TRUE", "True", "T")
    if name == "us" and hom:
        raise FormulaError(
            "us() has one variance per column: for a common one write cs(x | g, hom = TRUE) "
            "(correlated) or diag(x | g, hom = TRUE) (independent)",
            formula,
            pos,
        )
    inner, ipos = _strip(args, parts[0][0], parts[0][1])
    return _parse_bar(body, inner, base + ipos, formula, name, hom)


def _parse_cbind(lhs: str, formula: str, start: int) -> tuple[str, str] | None:
    m = re.fullmatch(r"cbind\s*\((.*)\)", lhs, flags=re.S)
    if m is None:
        return None
    body = m.group(1)
    off = start + lhs.index("(") + 1
    args = [_strip(body, s, e) for s, e, _ in _split_top(body, _scan(body, off), ",")]
    if len(args) != 2 or not all(a for a, _ in args):
        raise FormulaError("cbind() takes two expressions: cbind(successes, failures)", formula, start)
    return args[0][0], args[1][0]


def parse_formula(text: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed part, random-effects bars and offsets.

    Parameters
    ----------
    text : str
        A formula such as ``"Reaction ~ Days + (Days | Subject)"``.

    Returns
    -------
    ParsedFormula

    Raises
    ------
    FormulaError
        With the position of the problem: unbalanced parentheses, a missing ``~``, ``|`` outside a
        bar, an empty side, a grouping factor that is not a column name, R's ``^`` inside ``I()``.

    Examples
    --------
    >>> p = parse_formula("y ~ x + (x || g) + (1 | a/b)")
    >>> p.fixed
    'x'
    >>> [(b.lhs, b.group_name) for b in p.bars]
    [('1', 'g'), ('0 + x', 'g'), ('1', 'a'), ('1', 'a:b')]
    """
    if not isinstance(text, str):
        raise FormulaError(f"a formula is a string, not {type(text).__name__}")
    return _parse_cached(text)


@lru_cache(maxsize=256)
def _parse_cached(text: str) -> ParsedFormula:
    """Parsing is a pure function of the text: repeated fits of one formula parse it once."""
    try:
        return _parse(text)
    except FormulaError as exc:
        if exc.formula is None:
            raise FormulaError(exc.message, text, exc.position) from None
        raise


def _refuse_bare_bar(text: str, tilde: int, depths: list[int]) -> None:
    """lme4 reads ``y ~ 1 | g`` as ``y ~ (1 | g)``; hmix asks for the parentheses, and shows them."""
    bar = next((i for i in range(tilde + 1, len(text)) if text[i] == "|" and depths[i] == 0), None)
    if bar is None:
        return
    rhs = text[tilde + 1 :].strip()
    lhs_terms = text[tilde + 1 : bar].strip()
    response = text[:tilde].strip()
    hint = f"write {response} ~ ({rhs})"
    if any(depths[i] == 0 and text[i] in "+-" for i in range(tilde + 1, bar)):
        # lme4's reading makes every term left of the bar random; rarely what was meant
        last = max(i for i in range(tilde + 1, bar) if depths[i] == 0 and text[i] in "+-")
        fixed, random = text[tilde + 1 : last].strip(), text[last + 1 :].strip()
        hint += f" (as lme4 reads it: all of {lhs_terms} random), or {response} ~ {fixed} + ({random})"
    raise FormulaError(f"a random-effects term needs parentheses: {hint}", text, bar)


def _parse(text: str) -> ParsedFormula:
    depths = _scan(text)
    tildes = [i for i, ch in enumerate(text) if ch == "~" and depths[i] == 0]
    if not tildes:
        raise FormulaError("a formula needs '~' between the response and the terms: 'y ~ x'", text)
    if len(tildes) > 1:
        raise FormulaError("a formula has one '~'", text, tildes[1])
    for i, ch in enumerate(text):
        if ch == "^" and depths[i] > 0:
            raise FormulaError(
                "'^' inside a function is Python's XOR, not a power: write I(x**2), not I(x^2)",
                text,
                i,
            )
    tilde = tildes[0]
    response, rstart = _strip(text, 0, tilde)
    if not response:
        raise FormulaError("nothing on the left of '~': name the response", text, 0)
    rhs_raw = text[tilde + 1 :]
    if not rhs_raw.strip():
        raise FormulaError("nothing on the right of '~': write 'y ~ 1' for an intercept", text, tilde)
    _refuse_bare_bar(text, tilde, depths)
    cbind = _parse_cbind(response, text, rstart)
    if cbind is None:
        pos = _bar_position(response)
        if pos is not None:
            raise FormulaError("'|' belongs in a random-effects term on the right", text, rstart + pos)
        _check_formulaic(as_code(response), text, rstart, "response")
    else:
        for arg in cbind:
            _check_formulaic(as_code(arg), text, rstart, "cbind() argument")

    bars: list[BarTerm] = []
    offsets: list[str] = []
    fixed: list[_Piece] = []
    for piece in _summands(rhs_raw, tilde + 1):
        body = _unwrap(piece.text, keep=1)
        inner_pos = piece.start + piece.text.index(body) if body else piece.start
        if not body:
            if piece.sign == "" and piece.text == "":
                continue  # a leading unary sign: "y ~ -1 + x"
            raise FormulaError("an empty term: two operators in a row, or one at the end", text, piece.start)
        m_off = re.fullmatch(r"offset\s*\((.*)\)", body, flags=re.S)
        bar_at = _bar_position(body)
        call = _unwrap(body)  # (a structure's term may come in parentheses of its own)
        call_pos = inner_pos + body.index(call) if call else inner_pos
        if m_off is not None:
            if piece.sign == "-":
                raise FormulaError("an offset cannot be subtracted", text, piece.start)
            expr = m_off.group(1).strip()
            if not expr:
                raise FormulaError("offset() needs an expression", text, inner_pos)
            _check_formulaic(as_code(expr), text, inner_pos, "offset expression")
            offsets.append(expr)
        elif bar_at is not None and (structured := _parse_structured(call, call_pos, text)) is not None:
            if piece.sign == "-":
                raise FormulaError("a random-effects term cannot be subtracted", text, piece.start)
            bars.extend(structured)
        elif bar_at is not None:
            is_bar = _wrapped(body)
            if is_bar:
                inner_depths = _scan(body[1:-1])
                is_bar = any(ch == "|" and inner_depths[i] == 0 for i, ch in enumerate(body[1:-1]))
            if not is_bar:
                raise FormulaError(
                    "'|' outside a random-effects term: wrap it in parentheses, as in (x | g), "
                    "and join it to the other terms with '+'",
                    text,
                    inner_pos + bar_at,
                )
            if piece.sign == "-":
                raise FormulaError("a random-effects term cannot be subtracted", text, piece.start)
            bars.extend(_parse_bar(body, body[1:-1], inner_pos + 1, text))
        else:
            fixed.append(_Piece(piece.sign, body, inner_pos))

    fixed_text = ""
    for i, p in enumerate(fixed):
        sign = p.sign if (i > 0 or p.sign == "-") else ""
        fixed_text += (f" {sign} " if sign else "") + p.text
    fixed_text = fixed_text.strip() or "1"
    start = fixed[0].start if fixed else tilde + 1
    _check_formulaic(fixed_text, text, start, "fixed-effects terms")
    return ParsedFormula(
        text=text,
        response="" if cbind else response,
        cbind=cbind,
        fixed=fixed_text,
        bars=tuple(bars),
        offsets=tuple(offsets),
    )


def _quote_names(expr: str, dotted: frozenset[str]) -> str:
    """``expr`` with each name in ``dotted`` (outside quotes) back-quoted."""

    def quote(m: re.Match[str]) -> str:
        return f"`{m.group(1)}`" if m.group(1) in dotted else m.group(0)

    return _TOKEN.sub(quote, expr)


def quote_dotted(parsed: ParsedFormula, columns: Iterable[object]) -> ParsedFormula:
    """The formula with the dotted names that are data columns back-quoted.

    R's column names have dots (``total.fruits``); to Python, and so to formulaic, ``a.b`` reads
    the attribute ``b`` of ``a``. A dotted name that is a column of the data is that column.

    Parameters
    ----------
    parsed : ParsedFormula
    columns : iterable
        The data's column names.

    Returns
    -------
    ParsedFormula
        With ``text`` as written, the other parts rewritten.

    Examples
    --------
    >>> p = parse_formula("total.fruits ~ np.log(x.1) + (1 | g)")
    >>> p = quote_dotted(p, ["total.fruits", "x.1", "g"])
    >>> p.response, p.fixed
    ('`total.fruits`', 'np.log(`x.1`)')
    """
    dotted = frozenset(c for c in columns if isinstance(c, str) and "." in c and _NAME.fullmatch(c))
    if not dotted:
        return parsed

    def q(expr: str) -> str:
        return _quote_names(expr, dotted)

    return replace(
        parsed,
        response=q(parsed.response),
        cbind=None if parsed.cbind is None else (q(parsed.cbind[0]), q(parsed.cbind[1])),
        fixed=q(parsed.fixed),
        bars=tuple(replace(b, lhs=q(b.lhs)) for b in parsed.bars),
        offsets=tuple(q(o) for o in parsed.offsets),
    )
