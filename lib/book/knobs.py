"""A chapter's knobs, read from its ``parameters`` cell, and the rules their values must obey.

Each line of the cell is ``name = literal  # [rule] what it is``. The rule, in brackets at the
start of the comment, is a Python expression in the knob's own name that must hold, e.g.

    N = 32  # [4 <= N <= 4096] base samples of the Saltelli design
    init = "scratch"  # [init in ("scratch", "imagenet")] how the CNNs start
    deltas = [0.01, 0.1]  # [len(deltas) > 0 and all(d > 0 for d in deltas)] the steps

A rule too long for one line starts on the comment lines directly above the knob instead
(``# [first part`` ... ``# rest] what it is``), so that no line is longer than the page.

A value must also have the type of the default (an int is a valid float); a knob whose
default is ``None`` is checked by its rule alone. Every value a run would use is checked
before the chapter starts, so a bad one is refused at once, naming the knob, the value and
the rule. ``profile`` is the one knob without a rule: the runner sets it from ``--profile``.
"""
import ast
import builtins
import io
import tokenize
from dataclasses import dataclass

PROFILE = "profile"
# What a rule may call: enough for ranges, choices and lists, nothing that acts.
RULE_BUILTINS = {name: getattr(builtins, name)
                 for name in ("all", "any", "len", "isinstance", "int", "float", "str",
                              "bool", "list", "tuple", "abs", "min", "max", "sorted", "set")}


class KnobError(ValueError):
    """A knob's value breaks its type or rule, or the parameters cell is malformed."""


@dataclass(frozen=True)
class Knob:
    name: str
    default: object
    rule: str | None
    description: str

    def check(self, value, chapter: str = "the chapter"):
        """``value`` (an int made a float where the default is one) if it obeys the knob's
        type and rule; a KnobError naming the knob, the value and the rule otherwise."""
        value = self._typed(value, chapter)
        if self.rule is None:
            return value
        try:
            allowed = bool(eval(self.rule, {"__builtins__": RULE_BUILTINS},  # noqa: S307
                                {self.name: value}))
        except Exception:  # a value of the wrong shape for the rule breaks it too
            allowed = False
        if not allowed:
            raise KnobError(f"{chapter}: {self.name} = {value!r} is not allowed; it must "
                            f"satisfy {self.rule}" + (f" ({self.description})"
                                                      if self.description else ""))
        return value

    def _typed(self, value, chapter):
        expected = type(self.default)
        if self.default is None:
            return value
        if expected is float and type(value) is int:
            return float(value)
        if type(value) is not expected:
            raise KnobError(f"{chapter}: {self.name} must be a {expected.__name__} like its "
                            f"default {self.default!r}; got {type(value).__name__} {value!r}")
        return value

    def describe(self) -> str:
        rule = f"  [{self.rule}]" if self.rule else ""
        return f"{self.name} = {self.default!r}{rule}"


def _comments(source: str) -> dict:
    """Line number -> the comment that ends that line."""
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string[1:].strip()
    return comments


def _split_rule(comment: str):
    """``"[rule] text"`` -> (rule, text); a comment without a leading bracket has no rule."""
    if not comment.startswith("["):
        return None, comment
    depth = 0
    for position, char in enumerate(comment):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth == 0:
            return comment[1:position].strip(), comment[position + 1:].strip()
    raise KnobError(f"unbalanced brackets in the rule of {comment!r}")


def _comment_above(lines: list, first_line: int) -> str:
    """The comment lines directly above line ``first_line`` (1-based), joined, if they start a
    rule (their first begins with ``[``); else empty."""
    block = []
    number = first_line - 1
    while number >= 1 and lines[number - 1].strip().startswith("#"):
        block.insert(0, lines[number - 1].strip()[1:].strip())
        number -= 1
    # only the block's last run that opens with a bracket belongs to the knob
    starts = [i for i, text in enumerate(block) if text.startswith("[")]
    return " ".join(block[starts[-1]:]) if starts else ""


def parse(source: str, where: str = "the parameters cell") -> dict:
    """``{name: Knob}`` from the source of a parameters cell."""
    comments = _comments(source)
    lines = source.splitlines()
    knobs = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            raise KnobError(f"{where} may only hold 'name = literal' lines, found "
                            f"{ast.unparse(node)!r}")
        name = node.targets[0].id
        if name in knobs:
            raise KnobError(f"{where} sets {name} twice")
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise KnobError(f"{where}: {name} must be a literal, found "
                            f"{ast.unparse(node.value)!r}") from None
        above = _comment_above(lines, node.lineno)
        trailing = comments.get(node.end_lineno, "")
        rule, text = _split_rule(f"{above} {trailing}".strip() if above else trailing)
        if rule is not None:
            try:
                ast.parse(rule, mode="eval")
            except SyntaxError:
                raise KnobError(f"{where}: the rule of {name}, {rule!r}, is not a Python "
                                f"expression") from None
        knobs[name] = Knob(name, default, rule, text)
    return knobs


def merge_fragments(words) -> list:
    """Rejoin ``name=value`` words that a shell or make split at spaces inside brackets or
    quotes: ``["deltas=[0.1,", "1.0]"]`` -> ``["deltas=[0.1, 1.0]"]``."""
    merged, depth, quote = [], 0, None
    for word in words:
        if merged and (depth > 0 or quote):
            merged[-1] += " " + word
        else:
            merged.append(word)
        for char in word:
            if quote:
                quote = None if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char in "[({":
                depth += 1
            elif char in "])}":
                depth -= 1
    if depth or quote:
        raise KnobError(f"unbalanced brackets or quotes in {' '.join(words)!r}; quote a value "
                        f"with spaces as a whole, e.g. PARAMS=\"deltas='[0.1, 1.0]'\"")
    return merged


def parse_assignments(words) -> dict:
    """``["N=1024", "arch='vgg16'"]`` -> dict; values are Python literals, else strings. A
    knob given twice, or ``profile`` (set it with ``--profile``), is refused."""
    values = {}
    for pair in merge_fragments(list(words)):
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise KnobError(f"parameter {pair!r} is not of the form name=value")
        if key == PROFILE:
            raise KnobError("profile cannot be set as a parameter; use --profile (make: "
                            "PROFILE=...)")
        if key in values:
            raise KnobError(f"parameter {key} is given twice ({values[key]!r} and {text!r})")
        try:
            values[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            values[key] = text
    return values
