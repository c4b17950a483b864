"""Workflow documents: YAML in, a validated :class:`Workflow` out, or every problem at once
with ``FILE:LINE:COL`` and the offending key.

Checks, in order: YAML syntax and size; the JSON Schema shipped in the package
(``workflow.schema.json``); then what a schema cannot know: analyzer names (an unknown
one lists those that exist), ``with:`` against the analyzer's own schema, ``input``
(kinds, step references, cycles, a producer for ``file``/``email``), ``if:`` conditions
(syntax and names), timeouts. ``--set STEP.KEY=VALUE`` overrides go through the same
checks and are reported as ``--set STEP.KEY``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
import json
import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pcapwire.errors import WorkflowError
from pcapwire.workflow.analyzer import Analyzer
from pcapwire.workflow.config import AnalyzerConfig, ConfigProblem
from pcapwire.workflow.confine import Confinement, confine_config
from pcapwire.workflow.context import INPUT_KINDS
from pcapwire.workflow.expr import Expression, ExpressionError, check_names
from pcapwire.workflow.policy import VerdictPolicy

log = logging.getLogger(__name__)

#: Largest workflow document accepted (bytes).
MAX_WORKFLOW_BYTES = 1 * 2**20
#: Most YAML nodes in one document (bounds alias expansion, "billion laughs").
MAX_YAML_NODES = 100_000
#: Deepest nesting of YAML mappings and sequences in one document.
MAX_YAML_DEPTH = 64
#: Default per-call timeout of a step (seconds).
DEFAULT_STEP_TIMEOUT = 300.0
#: Default bound of each step's input queue.
DEFAULT_QUEUE_SIZE = 16

Path_ = tuple[str | int, ...]


def schema() -> dict[str, Any]:
    """The workflow JSON Schema shipped in the package."""
    text = resources.files("pcapwire.workflow").joinpath("workflow.schema.json").read_text()
    return json.loads(text)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    column: int
    key: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        level = "warning: " if self.warning else ""
        if self.line == 0:  # a ``--set STEP.KEY=VALUE`` override: no position in a file
            return f"{self.file} {self.key}: {level}{self.message}"
        key = f"{self.key}: " if self.key else ""
        return f"{self.file}:{self.line}:{self.column}: {level}{key}{self.message}"


class WorkflowInvalid(WorkflowError):
    """The document has problems; ``problems`` lists each with its position."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class Step:
    id: str
    uses: str
    input: str
    kind: str  # the record kind this step consumes
    with_: dict[str, Any]
    config: AnalyzerConfig
    analyzer: Analyzer
    condition: Expression | None = None
    timeout: float = DEFAULT_STEP_TIMEOUT
    concurrency: int = 1


@dataclass
class Workflow:
    name: str
    steps: list[Step]
    source: str = "<workflow>"
    description: str = ""
    on_query: bool | dict[str, str] = False
    policy: VerdictPolicy = field(default_factory=VerdictPolicy)
    queue_size: int = DEFAULT_QUEUE_SIZE
    document: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    warnings: list[Problem] = field(default_factory=list)
    #: set for a workflow that came from outside the server (:mod:`.confine`)
    confinement: Confinement | None = None

    @property
    def base_dir(self) -> Path | None:
        """Directory of the workflow file (None when it came from text, not a file); the
        confinement's base directory for a confined workflow."""
        if self.confinement is not None:
            return self.confinement.base_dir
        p = Path(self.source)
        return p.resolve().parent if p.is_file() else None

    def triggered_by(self, case: str, event: str) -> bool:
        """Whether a PCAP query with this case and event name triggers this workflow."""
        if self.on_query is True:
            return True
        if not self.on_query:
            return False
        rules = self.on_query
        return (fnmatch.fnmatchcase(case, rules.get("case", "*"))
                and fnmatch.fnmatchcase(event, rules.get("event", "*")))

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)


# ---- YAML with positions ------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only ``true``/``false`` (so ``on:`` stays a key, not ``True``)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


class _Positions:
    def __init__(self) -> None:
        self.values: dict[Path_, tuple[int, int, Any]] = {}
        self.keys: dict[Path_, tuple[int, int]] = {}

    def at(self, path: Path_, key: bool = False) -> tuple[int, int]:
        table: dict[Path_, Any] = self.keys if key else self.values
        p = tuple(path)
        while p:
            if p in table:
                return table[p][:2]
            if p in self.values:
                return self.values[p][:2]
            p = p[:-1]
        return self.values.get((), (1, 1, None))[:2]


def _load_yaml(text: str, file: str) -> tuple[Any, _Positions, list[Problem]]:
    pos = _Positions()
    problems: list[Problem] = []
    count = 0
    loader = _Loader(text)
    try:
        root = loader.get_single_node()

        def build(node: yaml.Node, path: Path_) -> Any:
            nonlocal count
            count += 1
            if count > MAX_YAML_NODES:
                raise WorkflowError(f"more than MAX_YAML_NODES={MAX_YAML_NODES} YAML nodes "
                                    "(aliases expanded)")
            if len(path) > MAX_YAML_DEPTH:
                mark = node.start_mark
                raise WorkflowError(f"line {mark.line + 1}: nested deeper than MAX_YAML_DEPTH="
                                    f"{MAX_YAML_DEPTH} levels")
            mark = node.start_mark
            pos.values[path] = (mark.line + 1, mark.column + 1, node)
            if isinstance(node, yaml.MappingNode):
                out: dict[Any, Any] = {}
                for knode, vnode in node.value:
                    key = loader.construct_object(knode, deep=True)
                    if not isinstance(key, str):
                        key = str(key)
                    kp = (*path, key)
                    pos.keys[kp] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
                    if key in out:
                        problems.append(Problem(file, *pos.keys[kp], _dotted(kp),
                                                f"duplicate key {key!r}"))
                    out[key] = build(vnode, kp)
                return out
            if isinstance(node, yaml.SequenceNode):
                return [build(n, (*path, i)) for i, n in enumerate(node.value)]
            return loader.construct_object(node, deep=True)

        data = build(root, ()) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problems.append(Problem(file, line, col, "", f"YAML syntax: {exc.problem or exc}"))
        return None, pos, problems
    except WorkflowError as exc:
        problems.append(Problem(file, 1, 1, "", str(exc)))
        return None, pos, problems
    except RecursionError:  # PyYAML's composer recurses once per level
        problems.append(Problem(file, 1, 1, "", f"nested deeper than MAX_YAML_DEPTH="
                                f"{MAX_YAML_DEPTH} levels"))
        return None, pos, problems
    finally:
        loader.dispose()
    return data, pos, problems


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def parse_duration(value: Any) -> float:
    """Seconds from a number or ``"90s"``/``"250ms"``/``"5m"``/``"1h"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", str(value))
    if not m:
        raise ValueError(f"{value!r} is not a duration (seconds, or 90s, 5m, 1h, 250ms)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["yara.max_bytes=100"]`` -> ``{"yara": {"max_bytes": 100}}`` (values as YAML)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, raw = item.partition("=")
        step, dot, key = target.partition(".")
        if not sep or not dot or not step or not key:
            raise WorkflowError(f"--set {item!r}: expected STEP.KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except RecursionError:
            raise WorkflowError(f"--set {item!r}: value nested too deeply") from None
        except yaml.YAMLError as exc:
            raise WorkflowError(f"--set {item!r}: value is not valid YAML: {exc}") from None
        out.setdefault(step, {})[key] = value
    return out


# ---- validation ---------------------------------------------------------------------------
def load_workflow(source: str | Path, host: Any, *, text: str | None = None,
                  overrides: dict[str, dict[str, Any]] | None = None,
                  confinement: Confinement | None = None) -> Workflow:
    """Load and validate; :class:`WorkflowInvalid` carries every problem."""
    wf, problems = check_workflow(source, host, text=text, overrides=overrides,
                                  confinement=confinement)
    errors = [p for p in problems if not p.warning]
    if errors or wf is None:
        raise WorkflowInvalid(errors or problems)
    return wf


def check_workflow(source: str | Path, host: Any, *, text: str | None = None,
                   overrides: dict[str, dict[str, Any]] | None = None,
                   confinement: Confinement | None = None
                   ) -> tuple[Workflow | None, list[Problem]]:
    """Validate a document; returns the workflow (None when invalid) and all problems
    (errors and warnings). ``host`` is a :class:`~pcapwire.hooks.host.PluginHost`.
    ``confinement`` (a workflow from outside the server, :mod:`.confine`): paths stay in
    its roots, server-only options keep their defaults."""
    file = str(source)
    if text is None:
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            return None, [Problem(file, 1, 1, "", f"cannot read: {exc.strerror or exc}")]
        if len(raw) > MAX_WORKFLOW_BYTES:
            return None, [Problem(file, 1, 1, "", f"larger than MAX_WORKFLOW_BYTES="
                                  f"{MAX_WORKFLOW_BYTES}")]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, [Problem(file, 1, 1, "", f"not UTF-8 (byte {exc.start})")]
    data, pos, problems = _load_yaml(text, file)
    if problems:
        return None, problems
    validator = jsonschema.Draft202012Validator(schema())
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - allowed):
                kp = (*path, key)
                problems.append(Problem(file, *pos.at(kp, key=True), _dotted(kp),
                                        f"unknown key {key!r}; allowed: "
                                        f"{', '.join(sorted(allowed))}"))
            continue
        message = err.message
        if err.validator == "oneOf" and path and path[-1] == "timeout":
            message = f"{err.instance!r} is not a duration (seconds, or 90s, 5m, 1h, 250ms)"
        elif err.validator == "oneOf" and path == ("on", "query"):
            message = (f"{err.instance!r} is not a trigger: use true, false, or a mapping "
                       "with `case` and/or `event` globs")
        problems.append(Problem(file, *pos.at(path), _dotted(path), message))
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        return None, problems
    # what a schema cannot know, also checked when the schema found problems elsewhere
    wf, more = _semantic(data, pos, file, host, overrides or {}, text, confinement)
    seen = {(p.line, p.column, p.key) for p in problems}
    problems += [p for p in more if (p.line, p.column, p.key) not in seen]
    if any(not p.warning for p in problems):
        return None, problems
    return wf, problems


def _check_config(analyzer: Analyzer, config: AnalyzerConfig, base: Path | None,
                  confinement: Confinement | None) -> tuple[list[str], bool]:
    """The analyzer's own I/O checks: (messages, whether they are only warnings). For a
    confined workflow an analyzer whose ``check_config`` takes no ``confinement`` is not
    trusted to read files (its checks are skipped), and an exception's text is not shown
    (it could quote a file)."""
    takes = "confinement" in inspect.signature(analyzer.check_config).parameters
    if confinement is not None and not takes:
        return [f"analyzer {type(analyzer).name!r} cannot check its files inside this "
                "tenant's directories (its check_config takes no 'confinement'); checks "
                "skipped"], True
    try:
        if takes:
            return analyzer.check_config(config, base, confinement=confinement), False
        return analyzer.check_config(config, base), False
    except Exception as exc:  # an analyzer bug must not hide the other problems
        if confinement is not None:
            log.exception("check_config of analyzer %s failed", type(analyzer).name)
            return [f"check_config failed ({type(exc).__name__}); the server log has the "
                    "details"], False
        return [f"check_config raised {type(exc).__name__}: {exc}"], False


def _semantic(data: dict[str, Any], pos: _Positions, file: str, host: Any,
              overrides: dict[str, dict[str, Any]], text: str,
              confinement: Confinement | None
              ) -> tuple[Workflow | None, list[Problem]]:
    problems: list[Problem] = []

    def err(path: Path_, message: str, key: bool = False, column: int | None = None,
            warning: bool = False) -> None:
        line, col = pos.at(path, key=key)
        problems.append(Problem(file, line, column or col, _dotted(path), message, warning))

    raw_steps: list[dict[str, Any]] = [
        s if isinstance(s, dict) and isinstance(s.get("uses"), str)
        else {"uses": "", "__invalid__": True} for s in data["steps"]]
    for s in raw_steps:
        if not isinstance(s.get("id", ""), str):
            s.pop("id")
    ids: dict[str, int] = {}
    for i, s in enumerate(raw_steps):
        sid = s.get("id", s["uses"])
        if sid in ids:
            err(("steps", i, "id") if "id" in s else ("steps", i, "uses"),
                f"duplicate step id {sid!r} (also step {ids[sid] + 1}); give each step an "
                "`id`")
        ids.setdefault(sid, i)
    for sid in overrides:
        if sid not in ids:
            problems.append(Problem("--set", 0, 0, sid, f"no step {sid!r}; steps: "
                                    f"{', '.join(ids)}"))
    analyzers = host.analyzers()
    resolved: dict[str, Analyzer] = {}
    for i, s in enumerate(raw_steps):
        name = s["uses"]
        if s.get("__invalid__"):
            continue
        if name not in analyzers:
            known = ", ".join(analyzers) or "(none: no plugin loaded)"
            err(("steps", i, "uses"), f"unknown analyzer {name!r}; available: {known}")
            continue
        resolved[s.get("id", name)] = analyzers[name].analyzer
    # outputs per step id, for producers and references
    outputs = {sid: set(type(a).outputs) for sid, a in resolved.items()}
    steps: list[Step] = []
    edges: dict[str, str] = {}
    for i, s in enumerate(raw_steps):
        sid = s.get("id", s["uses"])
        analyzer = resolved.get(sid)
        if analyzer is None or ids.get(sid) != i:
            continue
        acls = type(analyzer)
        accepted = acls.input_kinds()
        inp = s.get("input", accepted[0])
        if not isinstance(inp, str):
            inp = accepted[0]  # reported by the schema
        kind = accepted[0]
        if inp in INPUT_KINDS:
            kind = inp
            if inp not in accepted:
                err(("steps", i, "input"), f"analyzer {acls.name!r} takes "
                    f"{' or '.join(accepted)}, not {inp!r}")
            elif inp in ("file", "email") and not any(
                    inp in outs for other, outs in outputs.items() if other != sid):
                producers = [n for n, e in analyzers.items()
                             if inp in type(e.analyzer).outputs]
                err(("steps", i, "input"), f"no step of this workflow produces {inp!r} "
                    f"records; add a producer step (analyzers that output {inp}: "
                    f"{', '.join(producers) or 'none installed'})")
            elif inp == "verdict" and len(raw_steps) < 2:
                err(("steps", i, "input"), "input 'verdict' needs other steps producing "
                    "verdicts")
        elif inp in ids:
            if inp == sid:
                err(("steps", i, "input"), "a step cannot take its own output")
            elif inp in outputs:
                common = [k for k in accepted if k in outputs[inp]]
                if not common:
                    err(("steps", i, "input"), f"step {inp!r} outputs "
                        f"{', '.join(sorted(outputs[inp]))}; analyzer {acls.name!r} takes "
                        f"{' or '.join(accepted)}")
                else:
                    kind = common[0]
                    edges[sid] = inp
        else:
            err(("steps", i, "input"), f"{inp!r} is neither a kind "
                f"({', '.join(INPUT_KINDS)}) nor a step id ({', '.join(ids)})")
        with_ = dict(s["with"]) if isinstance(s.get("with"), dict) else {}
        with_.update(overrides.get(sid, {}))
        config: AnalyzerConfig | None = None
        cproblems = acls.Config.problems(with_)
        for p in cproblems:
            if p.path and p.path[0] in overrides.get(sid, {}):
                problems.append(Problem("--set", 0, 0, f"{sid}.{p.path[0]}", p.message))
            else:
                err(("steps", i, "with", *p.path), p.message,
                    key=p.message.startswith("unknown key"))
        if not cproblems and confinement is not None:
            with_, confined = confine_config(acls.Config, with_, confinement)
            for key, message in confined:
                err(("steps", i, "with", key), message)
            cproblems = [ConfigProblem((key,), m) for key, m in confined]
        if not cproblems:
            config = acls.Config.from_mapping(with_)
            if confinement is not None:
                base: Path | None = confinement.base_dir
            else:
                base = Path(file).resolve().parent if Path(file).is_file() else None
            extra, warn = _check_config(analyzer, config, base, confinement)
            for message in extra:
                err(("steps", i, "with") if "with" in s else ("steps", i, "uses"), message,
                    warning=warn)
        condition = None
        if isinstance(s.get("if"), str):
            line, col, node = pos.values[("steps", i, "if")]
            shift = 1 if getattr(node, "style", None) in ("'", '"') else 0
            multiline = getattr(node, "style", None) in ("|", ">")
            try:
                condition = Expression(s["if"])
            except ExpressionError as exc:
                err(("steps", i, "if"), str(exc),
                    column=None if multiline else col + shift + exc.column - 1)
            else:
                for message, c in check_names(condition, kind):
                    err(("steps", i, "if"), message,
                        column=None if multiline else col + shift + c - 1)
        timeout = DEFAULT_STEP_TIMEOUT
        if "timeout" in s:
            try:
                timeout = parse_duration(s["timeout"])
            except ValueError:
                timeout = DEFAULT_STEP_TIMEOUT  # reported by the schema
            if not 0 < timeout <= 86400:
                err(("steps", i, "timeout"), "must be more than 0 and at most 86400 seconds")
        concurrency = s.get("concurrency", 1)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool):
            concurrency = 1  # reported by the schema
        reason = analyzer.unavailable()
        if reason:
            err(("steps", i, "uses"), f"analyzer {acls.name!r} is unavailable here "
                f"({reason}); the step will be skipped", warning=True)
        if config is not None:
            steps.append(Step(id=sid, uses=acls.name, input=inp, kind=kind, with_=with_,
                              config=config, analyzer=analyzer, condition=condition,
                              timeout=timeout, concurrency=concurrency))
    for start in edges:  # cycles through explicit step references
        seen, cur = [start], edges.get(start)
        while cur is not None:
            if cur in seen:
                i = ids[start]
                err(("steps", i, "input"), "cycle: " + " -> ".join([*seen, cur]))
                break
            seen.append(cur)
            cur = edges.get(cur)
    if any(not p.warning for p in problems):
        return None, problems
    on: dict[str, Any] = data["on"] if isinstance(data.get("on"), dict) else {}
    wf = Workflow(name=data["name"], steps=steps, source=file,
                  description=data.get("description", ""),
                  on_query=on.get("query", False),
                  policy=VerdictPolicy.from_dict(data.get("verdicts")),
                  queue_size=int(data.get("queue_size", DEFAULT_QUEUE_SIZE)),
                  document=data, digest=hashlib.sha256(text.encode()).hexdigest(),
                  warnings=[p for p in problems if p.warning], confinement=confinement)
    return wf, problems
