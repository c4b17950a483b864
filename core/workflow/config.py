"""Analyzer configuration, declared in code (llm's ``Options(extra="forbid")``, IntelOwl's
typed attributes): an analyzer's ``Config`` is a frozen dataclass deriving from
:class:`AnalyzerConfig`; its JSON Schema is derived from the type hints; unknown keys are
errors, never silently ignored.

Example::

    @dataclass(frozen=True)
    class Config(AnalyzerConfig):
        rules: list[str] = option(description="rule files, directories or globs")
        max_bytes: int = option(10 * 2**20, minimum=1, description="bytes scanned per input")
        api_key: str = option("", secret=True, description="never echoed (redacted)")

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``list[T]``,
``dict[str, T]``, ``Literal[...]``, ``T | None`` and ``Any``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, ClassVar, Literal, get_args, get_origin

import jsonschema
from pcapwire.errors import ConfigError
from pcapwire.workflow.confine import OPTION_KINDS

#: What :meth:`AnalyzerConfig.redacted` shows instead of a secret value.
REDACTED = "***"

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
}


def option(default: Any = MISSING, *, default_factory: Any = MISSING, description: str = "",
           minimum: float | None = None, maximum: float | None = None,
           secret: bool = False, examples: list[Any] | None = None,
           kind: str | None = None) -> Any:
    """A config field with its documentation and bounds (a :func:`dataclasses.field`).

    A field without ``default`` (or ``default_factory``) is required in ``with:``.
    ``secret=True`` keeps the value out of logs, ``plugins list`` and error messages.
    Mutable defaults are copied: ``option([])`` behaves like ``default_factory=list``.
    ``kind`` says what a string value is, for workflows submitted through the API
    (:mod:`pcapwire.workflow.confine`): ``"path"`` (a file or directory read),
    ``"glob"`` (files, directories or glob patterns), ``"server"`` (only the server's
    configuration sets it: programs, engine arguments, scripts, output locations, URLs),
    ``"text"`` (plain data). A string option without a kind cannot be set through the API.
    """
    if kind is not None and kind not in OPTION_KINDS:
        raise ValueError(f"option kind {kind!r} is not one of {', '.join(OPTION_KINDS)}")
    meta = {"description": description, "minimum": minimum, "maximum": maximum,
            "secret": secret, "examples": examples, "kind": kind}
    if default is not MISSING and isinstance(default, (list, dict, set)):
        frozen_default = default
        default_factory = lambda: type(frozen_default)(frozen_default)  # noqa: E731
        default = MISSING
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a ``with:`` mapping; ``path`` is relative to that mapping."""

    path: tuple[str | int, ...]
    message: str

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.path)
        return f"{where}: {self.message}" if where else self.message


def _type_schema(tp: Any) -> dict[str, Any]:
    if tp is Any:
        return {}
    if tp in _SCALARS:
        schema = dict(_SCALARS[tp])
        if tp is float:
            schema = {"type": "number"}
        return schema
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        item = _type_schema(args[0]) if args else {}
        return {"type": "array", "items": item}
    if origin is dict or tp is dict:
        value = _type_schema(args[1]) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": value}
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        alts = [_type_schema(a) for a in non_none]
        if len(non_none) < len(args):
            alts.append({"type": "null"})
        return {"anyOf": alts}
    raise TypeError(f"config field type {tp!r} is not supported (use str, int, float, bool, "
                    "list[...], dict[str, ...], Literal[...], Optional or Any)")


class AnalyzerConfig:
    """Base of every analyzer ``Config`` (subclass it as a ``@dataclass(frozen=True)``)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of ``with:`` for this analyzer (``additionalProperties: false``)."""
        if not dataclasses.is_dataclass(cls):
            return {"type": "object", "additionalProperties": False, "properties": {}}
        hints = typing.get_type_hints(cls)
        props: dict[str, Any] = {}
        required: list[str] = []
        for f in dataclasses.fields(cls):
            schema = _type_schema(hints[f.name])
            meta = f.metadata
            if meta.get("description"):
                schema["description"] = meta["description"]
            for bound in ("minimum", "maximum"):
                if meta.get(bound) is not None:
                    schema[bound] = meta[bound]
            if meta.get("examples"):
                schema["examples"] = meta["examples"]
            if meta.get("secret"):
                schema["writeOnly"] = True
            if meta.get("kind"):
                schema["x-pcapwire-kind"] = meta["kind"]
            if f.default is not MISSING:
                if not meta.get("secret"):
                    schema["default"] = f.default
            elif f.default_factory is not MISSING:
                schema["default"] = f.default_factory()
            else:
                required.append(f.name)
            props[f.name] = schema
        out: dict[str, Any] = {"type": "object", "additionalProperties": False,
                               "properties": props}
        if required:
            out["required"] = required
        return out

    @classmethod
    def problems(cls, data: Any) -> list[ConfigProblem]:
        """Every problem of ``data`` against :meth:`json_schema` (empty list: valid)."""
        if data is None:
            data = {}
        validator = jsonschema.Draft202012Validator(cls.json_schema())
        secret_fields = cls.secret_fields()
        out = []
        for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
            path = tuple(err.absolute_path)
            if err.validator == "additionalProperties":
                extra = sorted(set(data) - set(cls.json_schema()["properties"]))
                known = ", ".join(sorted(cls.json_schema()["properties"])) or "(none)"
                for key in extra:
                    out.append(ConfigProblem((key,), f"unknown key {key!r}; known keys: {known}"))
                continue
            message = err.message
            if path and path[0] in secret_fields:
                message = f"invalid value ({err.validator} check failed; value not shown)"
            out.append(ConfigProblem(path, message))
        return out

    @classmethod
    def from_mapping(cls, data: Any, *, where: str = "with") -> AnalyzerConfig:
        """Validate and build; :class:`ConfigError` lists every problem at once."""
        problems = cls.problems(data)
        if problems:
            raise ConfigError("; ".join(f"{where}.{p}" if p.path else f"{where}: {p.message}"
                                        for p in problems))
        if not dataclasses.is_dataclass(cls):
            return cls()
        return cls(**(data or {}))

    @classmethod
    def secret_fields(cls) -> frozenset[str]:
        if not dataclasses.is_dataclass(cls):
            return frozenset()
        return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("secret"))

    def redacted(self) -> dict[str, Any]:
        """The values as a dict with every secret replaced by :data:`REDACTED`."""
        if not dataclasses.is_dataclass(self):
            return {}
        secrets = self.secret_fields()
        return {f.name: (REDACTED if f.name in secrets else getattr(self, f.name))
                for f in dataclasses.fields(self)}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"{type(self).__name__}({inner})"


@dataclass(frozen=True, repr=False)
class NoConfig(AnalyzerConfig):
    """For analyzers without settings: any key in ``with:`` is an error."""
