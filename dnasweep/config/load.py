"""The one way a YAML file and `key=value` overrides become a typed config: read, merge, and check
a plain dict against a dataclass schema, collecting every problem (OmegaConf stops at the first).

Owns: reading YAML (file, line and column in errors), override parsing, deep merge, flattening,
and `schema_problems` (unknown keys with a "did you mean", wrong types, wrong-shaped sections).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
from dataclasses import is_dataclass
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dnasweep.errors import ConfigError, Problem, type_hints


def did_you_mean(name: Any, known) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f"did you mean {close[0]}?" if close else ""


def type_name(typ: Any) -> str:
    return str(typ).replace("typing.", "") if get_origin(typ) else getattr(typ, "__name__", str(typ))


def fits(value: Any, typ: Any) -> bool:
    """True when `value` is, exactly, a value of field type `typ` (bool is not an int, a string is
    not a number): what lets a sampled value reach a trial unchanged."""
    origin = get_origin(typ)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(typ))
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in get_args(typ))
    if typ is type(None):
        return value is None
    if typ is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is Any:
        return True
    return isinstance(value, origin or typ)


def _example(schema: type) -> str:
    """A section's defaults as a one-line YAML flow mapping (nested sections nested): the fix for a
    wrong-shaped section."""
    defaults = OmegaConf.to_container(OmegaConf.structured(schema))
    return yaml.safe_dump(defaults, default_flow_style=True, sort_keys=False, width=float("inf")).strip()


def schema_problems(node: Any, schema: type, prefix: str) -> list[Problem]:
    """Unknown keys and type errors of a plain dict `node` against dataclass `schema`, all of them:
    each leaf is merged on its own, lists of dataclasses item by item."""
    if not isinstance(node, dict):
        return [Problem(prefix or "<root>", f"expected a mapping, got {type(node).__name__} {node!r}",
                        f"e.g. {prefix.split('.')[-1]}: {_example(schema)}" if prefix else "")]
    out: list[Problem] = []
    types_ = type_hints(schema)
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in types_:
            fix = did_you_mean(key, types_) or f"known keys here: {', '.join(types_)}"
            out.append(Problem(dotted, "unknown key", fix.replace("did you mean ", f"did you mean {prefix}.", 1)
                               if prefix and fix.startswith("did") else fix))
            continue
        typ = types_[key]
        if (found := interpolations(value, dotted)) and not is_dataclass(typ):
            out += found  # (a section is walked below, so each value is named once)
        elif is_dataclass(typ):
            out += schema_problems(value, typ, dotted)
        elif get_origin(typ) is list and is_dataclass(item := get_args(typ)[0]):
            if not isinstance(value, list):
                out.append(Problem(dotted, f"expected a list, got {type(value).__name__} {value!r}",
                                   f"e.g. {key}: [{_example(item)}]"))
            else:
                for i, v in enumerate(value):
                    out += schema_problems(v, item, f"{dotted}[{i}]")
        elif get_origin(typ) is list and not isinstance(value, list):
            out.append(Problem(dotted, f"expected a list, got {type(value).__name__} {value!r}"))
        elif get_origin(typ) is dict:
            out += _dict_problems(dotted, key, value, typ)
        elif get_origin(typ) is list and (bad := [v for v in value if not fits(v, item := get_args(typ)[0])]):
            # checked here, not by OmegaConf: it would convert '128' to 128 and refuse True only
            out.append(Problem(dotted, f"invalid items {bad} in {value!r}: this field is {type_name(typ)}",
                               f"expected {type_name(typ)}" + (", e.g. [64, 128]" if fits(1, item) else "")))
        else:
            try:
                OmegaConf.merge(OmegaConf.structured(schema), {key: value})
            except (OmegaConfBaseException, TypeError, ValueError) as e:  # TypeError: a list for a mapping
                out.append(Problem(dotted, f"invalid value {value!r}: {str(e).splitlines()[0]}",
                                   f"expected {type_name(typ)}"))
                continue
            if get_origin(typ) not in (list, dict) and not fits(value, typ):  # OmegaConf would convert it
                out.append(Problem(dotted, f"invalid value {value!r} ({type(value).__name__}): this field is "
                                   f"{type_name(typ)}", f"expected {type_name(typ)}"
                                   + (" (quote it to pass text)" if fits("x", typ) else "")))
    return out


def _dict_problems(dotted: str, key: str, value: Any, typ: Any) -> list[Problem]:
    """A dict field (`custom: dict[str, float]`), checked as list fields are: a mapping, each key
    and value exactly of the declared types (OmegaConf would turn "1" into 1.0, or crash on a list)."""
    key_type, value_type = get_args(typ) or (Any, Any)
    example = f"e.g. {key}: {{a100: 1}}" if fits(1, value_type) else f"a mapping of {type_name(typ)}"
    if not isinstance(value, dict):
        return [Problem(dotted, f"expected a mapping, got {type(value).__name__} {value!r}", example)]
    bad = {k: v for k, v in value.items() if not fits(k, key_type) or not fits(v, value_type)}
    return [Problem(dotted, f"invalid entries {bad!r}" + (f" in {value!r}" if bad != value else "")
                    + f": this field is {type_name(typ)}",
                    f"expected {type_name(typ)}, {example}" + (" (numbers unquoted)" if fits(1, value_type) else ""))
            ] if bad else []


def interpolations(value: Any, dotted: str) -> list[Problem]:
    """A Problem for each text in `value` (walked through mappings and lists) that OmegaConf would not
    keep as written: `${` would resolve as an interpolation (`${train.lr}` silently becomes the value,
    an unknown key crashes), and `???`, its missing-value marker, would silently become the default.
    Refused rather than resolved: a config says what it means."""
    if isinstance(value, str) and value.strip() == "???":
        return [Problem(dotted, "'???' (OmegaConf's missing-value marker) would silently take the default here",
                        "write the value itself, or leave the key out to take the default")]
    if isinstance(value, str):
        return [Problem(dotted, f"interpolation (${{...}}) is not supported, got {value!r}",
                        "write the value itself instead of a ${...} reference")] if "${" in value else []
    if isinstance(value, dict):
        return [q for k, v in value.items() for q in interpolations(v, f"{dotted}.{k}" if dotted else str(k))]
    if isinstance(value, list):
        return [q for i, v in enumerate(value) for q in interpolations(v, f"{dotted}[{i}]")]
    return []


def covers(key: str, keys) -> bool:
    """Whether the problem on dotted `key` is about one of the dotted `keys` that were set (the
    same key, a key below it, or a section above it)."""
    return any(key == k or k.startswith(f"{key}.") or key.startswith((f"{k}.", f"{k}[")) for k in keys)


def override_key(override: str) -> str:
    return override.partition("=")[0]


def from_command_line(problems: list[Problem], overrides: list[str] | None) -> list[Problem]:
    """`problems` with those on a key that a `key=value` override set said to come from the command
    line (the file named in the error did not hold that value)."""
    if not overrides:
        return problems
    out = []
    for q in problems:
        given = [o for o in overrides if "=" in o and covers(q.key, [override_key(o)])]
        # the override nearest the key (search.model.d_modl=... over search.model=...); a tie: the last
        given.sort(key=lambda o: (override_key(o) == q.key, len(override_key(o))))
        said = given and given[-1] not in q.message  # (a problem parsing it quotes it already)
        out.append(Problem(q.key, f"{q.message} (set on the command line: {given[-1]})", q.fix) if said else q)
    return out


def build(schema: type, data: dict) -> Any:
    """A typed `schema` instance from a dict that `schema_problems` passed."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))


def leaf_type(schema: type | None, key: str) -> Any | None:
    """The declared type of dotted `key` in dataclass `schema` (a dict field's value type below
    it); None when unknown."""
    typ: Any = schema
    for part in key.split("."):
        if is_dataclass(typ):
            typ = type_hints(typ).get(part)
        elif get_origin(typ) is dict:
            typ = get_args(typ)[1]
        else:
            return None
    return typ


def _is_text(typ: Any) -> bool:
    """A str field (or str | None, or a Literal of words): its override is text as typed."""
    args = [a for a in get_args(typ) if a is not type(None)] if get_origin(typ) in (Union, types.UnionType) else [typ]
    return bool(args) and all(a is str or (get_origin(a) is Literal and all(isinstance(w, str) for w in get_args(a)))
                              for a in args)


def _override(key: str, text: str, schema: type | None) -> dict:
    """One `key=text` as a nested dict. Text for a text field is kept as typed: YAML would cut
    'lm #2' at its comment and read 'a: b' as a mapping. Only null (on an optional field) and a
    quoted value are read as YAML; other fields take YAML scalars and flow lists."""
    typ = leaf_type(schema, key)
    if typ is None and key.startswith("smoke.") and is_dataclass(schema) and "smoke" in type_hints(schema):
        typ = leaf_type(schema, key.removeprefix("smoke."))  # the overlay's keys are the file's own
    if typ is None or not _is_text(typ):
        return OmegaConf.to_container(OmegaConf.from_dotlist([f"{key}={text}"]))
    node: Any = text
    t = text.strip()
    if (len(t) > 1 and t[0] == t[-1] and t[0] in "'\"") or t in ("", "~", "null", "Null", "NULL"):
        try:
            value = yaml.safe_load(t)
        except yaml.YAMLError:  # not one quoted scalar after all ('a' + 'b'): keep the text
            value = text
        if isinstance(value, str) or (value is None and fits(None, typ)):
            node = value
    for part in reversed(key.split(".")):
        node = {part: node}
    return node


def yaml_value(text: str) -> Any:
    """An override's value as YAML (a scalar, flow list or flow mapping), as `parse_overrides` reads
    the value of a field that is not text. Raises on malformed YAML."""
    return OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]


_INDEXED = re.compile(r"^([^\[]*)\[([^\]]*)\]\.?(.*)$")  # head[index].rest


def _indexed_problem(key: str, text: str, schema: type | None) -> Problem:
    """The problem of an override key with an [index] (`constraints[0]=...`): an override sets a
    list whole, and names a mapping's entry by a dotted key."""
    m = _INDEXED.match(key)
    head, index, rest = m.groups() if m else (key.partition("[")[0], "", "")
    typ = leaf_type(schema, head) if schema is not None and head else None
    if typ is None and schema is not None:  # no such key: the index aside, what would it be?
        parent, _, name = head.rpartition(".")
        up = leaf_type(schema, parent) if parent else schema
        close = did_you_mean(name, type_hints(up)) if is_dataclass(up) else ""
        return Problem(key, f"unknown key {head}", close.replace("did you mean ", f"did you mean {parent}.", 1)
                       if parent and close else close)
    if get_origin(typ) is dict:
        return Problem(key, f"{head} is a mapping: an override names its entries by a dotted key, not [{index}]",
                       f"e.g. {head}.{index}={text}")
    if typ is not None and typ is not Any and get_origin(typ) is not list:
        return Problem(key, f"{head} is not a list ({type_name(typ)}): an override names a field by its dotted "
                       "path, without [index]", f"e.g. {head}={text}")
    try:
        value = yaml_value(text)
    except Exception:  # a malformed value: shown as typed
        value = text
    if rest:  # one field of an item: the item is written whole too (its other fields as the file has them)
        for part in reversed(rest.split(".")):
            value = {part: value}
        shown = "{..., " + yaml.safe_dump(value, default_flow_style=True, width=float("inf")).strip()[1:]
    else:
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else yaml.safe_dump(
            value, default_flow_style=True, width=float("inf")).strip().removesuffix("\n...").strip()
    before = int(index) if index.isdigit() else 0
    example = f"{head}=[{', '.join(['...'] * before + [shown])}]"
    others = "; write out each ... as the file has it" if before or rest else ""
    return Problem(key, f"{head} is a list, and an override sets a list whole: an item ([{index}]) cannot be set "
                   "on its own", f"write the whole list in one override, every item it should hold (it replaces "
                   f"the file's list{others}), quoted for the shell: e.g. '{example}'")


def parse_overrides(overrides: list[str], schema: type | None = None) -> tuple[dict, list[Problem]]:
    """`key=value` strings -> nested dict, later ones winning. Values are YAML scalars, but those of
    the str fields of dataclass `schema` (when given) arrive as typed."""
    out, bad = {}, []
    for o in overrides:
        key, eq, text = o.partition("=")
        if not eq or not key:
            bad.append(Problem(o, "override must look like dotted.key=value", "e.g. train.max_steps=200"))
            continue
        if "[" in key:  # OmegaConf reads constraints[0] as a mapping key '0': the list became a dict
            bad.append(_indexed_problem(key, text, schema))
            continue
        try:
            out = deep_merge(out, _override(key, text, schema))
        except Exception as e:  # OmegaConf's own errors and yaml.YAMLError from a malformed value
            bad.append(Problem(key, f"cannot parse the override {o!r}: {str(e).splitlines()[0]}",
                               "values are YAML scalars or flow lists, e.g. key=3e-4 or key=[1,2]"))
    return out, bad


def _yaml_message(e: Exception) -> str:
    """'line L, column C: what went wrong' of a YAML error. PyYAML's own first line ("while
    parsing a flow mapping") names no line; its marks do (counted from 0)."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or not problem:  # OmegaConf's own errors (e.g. a bad ${...}) carry no mark
        return str(e).splitlines()[0]
    msg = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    return msg + (f" ({context} from line {start.line + 1})" if context and start else "")


def read_yaml(path: str) -> dict:
    """A YAML file as a plain dict; a missing file or malformed YAML is a ConfigError."""
    if os.path.isdir(path):  # most often a sweep directory, whose space as run is SWEEP/space.json
        raise ConfigError([Problem("<file>", f"{path} is a directory, not a YAML config file",
                                   "pass a config file, e.g. search_spaces/lm.yaml; a sweep directory is "
                                   "for `dnasweep resume`, `pareto` or `analyze`")], source=path)
    if not os.path.isfile(path):
        raise ConfigError([Problem("<file>", f"no such file: {path}", "check the path")], source=path)
    try:
        # The document's own shape first: OmegaConf reads plain text as a mapping of that one key
        # (the whole file became an unknown key) and an empty file as {} (a valid default config).
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        if isinstance(data, dict):
            data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # yaml.YAMLError and OmegaConf's own: both mean "not valid YAML"
        raise ConfigError([Problem("<file>", f"not valid YAML: {_yaml_message(e)}",
                                   "fix the syntax there (indent with spaces, not tabs; a colon after "
                                   "each key; close brackets and quotes)")], source=path) from None
    if data is None:
        raise ConfigError([Problem("<file>", f"{path} is empty" + ("" if os.path.getsize(path) == 0 else
                                                                   " (nothing but blanks, comments or null)"),
                                   "write the config in it (see search_spaces/*.yaml), or pass another file")],
                          source=path)
    if not isinstance(data, dict):
        raise ConfigError([Problem("<root>", f"{path} is not a YAML mapping (expected a mapping, got "
                                   f"{type(data).__name__})", "a config maps keys to values, e.g. model: {d_model: "
                                   "64}: is this the right file?")], source=path)
    return data


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {"a.b.c": leaf}."""
    out = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
