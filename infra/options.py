"""Command-line options generated from a command's config dataclass: one source for name, type, default and help.

Each field of the frozen config becomes one option (`micro_batch` → `--micro-batch`): its type gives the option's
type, a field without a default is required, and the string literal under the field (its attribute docstring) is the
help — or, for configs documented as `name: text` entries in the class docstring, that entry. Every option defaults
to None, meaning "not set": the command receives only the options that were set (`infra.usage.given`), so the
dataclass holds each default once; `--help` shows it from there. A `Flag` overrides one field where the command line
differs (a short or other name, a repeatable option with a parser, hidden, an on/off pair); a `Group` is a set of
options shared by several commands (the CLIP encoder, the LLM). Only the standard library and typer are imported,
and docstrings are read from the source text, so `--help` stays instant.
"""
from __future__ import annotations

import ast
import functools
import inspect
import re
import sys
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

from infra.usage import given


@dataclass(frozen=True)
class Flag:
    """How one field appears on the command line where the generated option does not fit."""

    names: tuple[str, ...] = ()
    """Option names (`--from`, `--question -q`); default `--field-name`."""
    type: Any = None
    """What the command line parses (default: from the field's type, see `cli_type`)."""
    parse: Callable[[Any], Any] | None = None
    """Turns the parsed value into the field's value (called only when the option is set)."""
    help: str | None = None
    """Help text (default: the field's docstring)."""
    hidden: bool = False
    switch: bool = False
    """An on/off pair (`--progress/--no-progress`) instead of a flag that only turns on."""
    required: bool | None = None
    """Default: required when the field has no default."""
    argument: bool = False
    """A positional argument instead of an option."""


def flag(*names: str, **kw) -> Flag:
    return Flag(names=names, **kw)


@dataclass(frozen=True)
class Group:
    """Options for fields of `config` that several commands share, `{field: option parameter name}`."""

    config: type
    names: dict[str, str]
    flags: dict[str, Flag] = field(default_factory=dict)

    def take(self, values: dict) -> dict:
        """Remove the group's set options from `values`, keyed by the group config's field names."""
        return {name: values.pop(option) for name, option in self.names.items() if option in values}


def field_docs(config: type) -> dict[str, str]:
    """Each field's help: its attribute docstring, else its `name: text` entry in the class docstring."""
    docs: dict[str, str] = {}
    for cls in reversed([c for c in config.__mro__ if "__dataclass_fields__" in vars(c)]):
        docs.update(_class_doc_entries(cls.__doc__ or "", [f.name for f in fields(cls)]))
        node = _class_node(cls)
        if node is None:  # no source (a class built at run time): the class docstring only
            continue
        body = node.body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


@functools.lru_cache(maxsize=None)
def _source(filename: str | None) -> str:
    try:
        return Path(filename).read_text(encoding="utf-8")
    except (OSError, TypeError):
        return ""


def _class_node(cls: type) -> ast.ClassDef | None:
    """The class's syntax tree, parsed from its lines only (a whole module takes ~20 ms, `--help` would feel it)."""
    source = _source(getattr(sys.modules.get(cls.__module__), "__file__", None))
    start = source.find(f"\nclass {cls.__name__}") + 1
    if not start:
        return None
    end = COLUMN_0.search(source, source.find("\n", start) + 1)  # the next line at column 0 ends the class
    for text in (source[start:end.start() if end else len(source)], source):
        try:
            tree = ast.parse(text)
        except SyntaxError:  # a string running at column 0: parse the whole module
            continue
        return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__), None)
    return None


COLUMN_0 = re.compile(r"^\S", re.M)
ENTRY = re.compile(r"(?<![\w.`])(\w+(?: / \w+)*): ")
"""`name: ` or `a / b: ` in a class docstring; kept where every name is a field of the class."""


def _class_doc_entries(doc: str, names: list[str]) -> dict[str, str]:
    """`name: text` (or `a / b: text`) entries of a class docstring; an entry runs to the next one."""
    text = " ".join(doc.split())
    matches = [m for m in ENTRY.finditer(text) if set(m.group(1).split(" / ")) <= set(names)]
    entries: dict[str, str] = {}
    for match, after in zip(matches, [*matches[1:], None]):
        entry = text[match.end():after.start() if after else len(text)].strip()
        for name in match.group(1).split(" / "):
            entries.setdefault(name, entry)
    return entries


def cli_type(tp: Any) -> Any:
    """What the command line parses for a field type: `X | None` → X; `str | Path` (a path or a URL) → str;
    `tuple[X, ...]` → a repeatable option of X; str, int, float, bool and Path as they are."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) > 1:
            if str in args:
                return str
            raise TypeError(f"{tp}: no command-line type; give the field a Flag(type=..., parse=...)")
        tp = args[0]
    if typing.get_origin(tp) is tuple and typing.get_args(tp)[1:] == (Ellipsis,):
        return list[typing.get_args(tp)[0]]
    if tp in (str, int, float, bool, Path):
        return tp
    raise TypeError(f"{tp}: no command-line type; give the field a Flag(type=..., parse=...)")


def _shown(default: Any) -> str:
    """The dataclass default as `--help` shows it (nothing where it is None or computed)."""
    if default is MISSING or default is None:
        return ""
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return ", ".join(map(_shown, default))
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


@dataclass(frozen=True)
class _Spec:
    name: str
    type: Any
    default: Any
    help: str
    flag: Flag


def _parameter(spec: _Spec, show_defaults: bool) -> inspect.Parameter:
    import typer

    f = spec.flag
    typ = f.type or cli_type(spec.type)
    required = f.required if f.required is not None else spec.default is MISSING
    first = ... if required else None
    text = f.help or spec.help
    if typing.get_origin(typ) is list and "repeatable" not in text:
        text = f"{text} (repeatable)".strip()
    if show_defaults and not required and _shown(spec.default):  # rich markup would eat "[default: ...]"
        text = f"{text} (default: {_shown(spec.default)})".strip()
    if f.argument:
        info = typer.Argument(first, help=text, show_default=False, hidden=f.hidden)
    else:
        names = list(f.names or ("--" + spec.name.replace("_", "-"),))
        if f.switch:
            names[0] = f"{names[0]}/--no-{names[0][2:]}"
        info = typer.Option(first, *names, help=text, hidden=f.hidden, show_default=False)
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                             annotation=typ if required else Optional[typ])


def _specs(config: type, flags: dict[str, Flag], skip: tuple[str, ...]) -> list[_Spec]:
    hints, docs = typing.get_type_hints(config), field_docs(config)
    def default(f):  # a computed default (default_factory) is not shown, but the option is not required either
        return None if f.default is MISSING and f.default_factory is not MISSING else f.default

    return [_Spec(f.name, hints[f.name], default(f), docs.get(f.name, ""), flags.get(f.name, Flag()))
            for f in fields(config) if f.name not in skip]


def options(config: type, *, flags: dict[str, Flag] | None = None, groups: tuple[Group, ...] = (),
            skip: tuple[str, ...] = (), extra: dict[str, Flag] | None = None, show_defaults: bool = True):
    """Decorator: the typer command's options are `config`'s fields (less `skip`), the groups' and `extra`'s (options
    with no field, each with its `Flag.type`); the decorated function receives a dict of the options that were set,
    each parsed (`Flag.parse`; a repeatable option as a tuple)."""
    flags = flags or {}
    own = {s.name: s for s in _specs(config, flags, skip)}
    shared: dict[str, _Spec] = {}
    for group in groups:
        for s in _specs(group.config, group.flags, ()):
            if s.name in group.names:
                shared[group.names[s.name]] = _Spec(group.names[s.name], s.type, s.default, s.help, s.flag)
    specs = [shared.pop(name, spec) for name, spec in own.items()] + list(shared.values())
    specs += [_Spec(name, None, None, "", f) for name, f in (extra or {}).items()]
    unknown = set(flags) - set(own)
    if unknown:
        raise TypeError(f"{config.__name__} has no field {sorted(unknown)}")
    parsers = {s.name: s.flag.parse for s in specs if s.flag.parse}

    def decorate(fn: Callable[[dict], Any]) -> Callable[..., Any]:
        def command(**values):
            values = {k: (tuple(v) or None) if isinstance(v, list) else v for k, v in values.items()}
            return fn({k: parsers[k](v) if k in parsers else v for k, v in given(**values).items()})

        command.__signature__ = inspect.Signature([_parameter(s, show_defaults) for s in specs])
        command.__name__, command.__qualname__, command.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        command.__module__ = fn.__module__
        return command

    return decorate
