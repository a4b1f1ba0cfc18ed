#!/usr/bin/env python3
"""Metric names used by PromQL expressions, for checking them against what the services export.

The parser is deliberately small: it does not build a syntax tree, it removes everything that
can hold an identifier that is not a metric name (strings, label matchers, range brackets,
grouping clauses), then takes the identifiers that are left and are not functions, aggregations
or keywords. That is exact for the PromQL the dashboards and alert rules use.

    promql_names.py 'sum by (job) (rate(foo_total{a="b"}[5m])) / on(job) bar'
    foo_total
    bar
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

# Words that can stand where a metric name could and are not one.
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    }
)

# Grouping and matching clauses whose parentheses hold label names, not expressions.
_LABEL_LIST = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
_NAME_MATCHER = re.compile(r'__name__\s*=\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')')
_TOKEN = re.compile(
    r"(?P<number>\d[\w.]*(?:[eE][+-]?\d+)?)"
    r"|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)"
    r"|(?P<brace>\{)"
    r"|(?P<bracket>\[)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_LABEL_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")

# Grafana's built-in interval variables, and what stands in for them outside Grafana.
GRAFANA_INTERVALS = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "30000",
}
# `$1` and `${1}` are regex back-references (label_replace), not variables.
_GRAFANA_VAR = re.compile(
    r"\$\{([A-Za-z_]\w*)(?::\w+)?\}|\$([A-Za-z_]\w*)|\[\[([A-Za-z_]\w*)(?::\w+)?\]\]"
)


@dataclass
class Selector:
    """One vector selector: its metric name and the label names its matchers use."""

    name: str
    labels: frozenset[str] = field(default_factory=frozenset)


def substitute_grafana_variables(expr: str, values: dict[str, str] | None = None) -> str:
    """Replaces `$var`, `${var}` and `[[var]]` with `values[var]`, the interval variables with
    fixed durations, and any other variable with `.*` (dashboards use variables only as regex
    label values, `instance=~"$instance"`)."""
    values = values or {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in values:
            return values[name]
        if name in GRAFANA_INTERVALS:
            return GRAFANA_INTERVALS[name]
        return ".*"

    return _GRAFANA_VAR.sub(replace, expr)


def _matching(text: str, start: int, open_char: str, close_char: str) -> int:
    """Index just past the bracket that closes the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_char:
            depth += 1
        elif text[i] == close_char:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced {open_char!r} in {text!r}")


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of `expr`, in order, with the label names each one matches on."""
    expr = substitute_grafana_variables(expr)
    expr = _COMMENT.sub("", expr)
    named = [m.group(1)[1:-1] for m in _NAME_MATCHER.finditer(expr)]
    # Strings go first: they may hold anything, braces and parentheses included.
    expr = _STRING.sub('""', expr)
    while True:
        stripped = _LABEL_LIST.sub(" ", expr)
        if stripped == expr:
            break
        expr = stripped

    found: list[Selector] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        assert match is not None
        kind = match.lastgroup
        pos = match.end()
        if kind == "bracket":
            # A range or subquery: durations and variables only.
            pos = _matching(expr, match.start(), "[", "]")
        elif kind == "brace":
            # Matchers without a name before them: `{__name__="x"}`, found above.
            pos = _matching(expr, match.start(), "{", "}")
        elif kind == "ident":
            word = match.group("ident")
            rest = expr[pos:].lstrip()
            if rest.startswith("("):
                continue  # a function or an aggregation
            if word.lower() in KEYWORDS:
                continue
            labels: frozenset[str] = frozenset()
            if rest.startswith("{"):
                brace = len(expr) - len(rest)
                end = _matching(expr, brace, "{", "}")
                labels = frozenset(_LABEL_NAME.findall(expr[brace + 1 : end - 1]))
                pos = end
            found.append(Selector(word, labels))
    found.extend(Selector(name) for name in named)
    return found


@dataclass
class Aggregation:
    """One aggregation: its operator, `by`, `without` or None, and the labels of that clause."""

    op: str
    mode: str | None
    labels: frozenset[str] = field(default_factory=frozenset)

    def keeps(self, label: str) -> bool:
        """Whether `label` survives the aggregation."""
        if self.mode == "by":
            return label in self.labels
        if self.mode == "without":
            return label not in self.labels
        return False


_AGGREGATION = re.compile(
    r"\b(sum|avg|min|max|count|group|stddev|stdvar|topk|bottomk|quantile|count_values|limitk|limit_ratio)"
    r"\s*(?:(by|without)\s*\(([^()]*)\)\s*)?\(",
    re.IGNORECASE,
)
_CLAUSE_AFTER = re.compile(r"\s*(by|without)\s*\(([^()]*)\)", re.IGNORECASE)


def _clean(expr: str) -> str:
    """`expr` without variables, comments or string contents."""
    return _STRING.sub('""', _COMMENT.sub("", substitute_grafana_variables(expr)))


def aggregations(expr: str) -> list[Aggregation]:
    """The aggregations of `expr`, in order, with their grouping clause (before or after the
    argument)."""
    expr = _clean(expr)
    found: list[Aggregation] = []
    for match in _AGGREGATION.finditer(expr):
        mode, labels = match.group(2), match.group(3)
        if mode is None:
            after = _CLAUSE_AFTER.match(expr, _matching(expr, match.end() - 1, "(", ")"))
            if after:
                mode, labels = after.group(1), after.group(2)
        names = frozenset(label.strip() for label in (labels or "").split(",") if label.strip())
        found.append(Aggregation(match.group(1).lower(), mode.lower() if mode else None, names))
    return found


def histogram_quantile_arguments(expr: str) -> list[str]:
    """The second argument (the buckets) of every `histogram_quantile(φ, buckets)` in `expr`."""
    expr = _clean(expr)
    arguments: list[str] = []
    for match in re.finditer(r"\bhistogram_quantile\s*\(", expr):
        end = _matching(expr, match.end() - 1, "(", ")")
        inner = expr[match.end() : end - 1]
        depth = 0
        for i, char in enumerate(inner):
            if char in "([{":
                depth += 1
            elif char in ")]}":
                depth -= 1
            elif char == "," and depth == 0:
                arguments.append(inner[i + 1 :].strip())
                break
    return arguments


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects."""
    return {s.name for s in selectors(expr)}


def label_values_query(query: str) -> str | None:
    """The PromQL inside a Grafana variable query `label_values(<expr>, <label>)`, if any.

    `label_values(<label>)` (no expression) and other variable queries give None."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query, re.DOTALL)
    if match:
        return match.group(1)
    match = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.DOTALL)
    if match:
        return match.group(1)
    return None


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in {"-h", "--help"}:
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    for expr in argv[1:]:
        for name in sorted(metric_names(expr)):
            print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
