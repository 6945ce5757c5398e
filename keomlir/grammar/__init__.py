"""The formula language: `formula.lark` and the parser that turns text into IR."""

from .parser import FormulaError, FormulaSyntaxError, parse_alias, parse_formula  # noqa: F401
