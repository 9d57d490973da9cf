"""The workflow spec (`workflows.yaml`): parsing, pydantic validation, error paths.

Validation happens in two passes. The first checks the file's shape (top-level keys,
workflows, steps, resources). The second checks what only the step kinds know: each
step's ``params`` against its kind's ``Params`` model, its ``inputs`` against the kind's
declared inputs, that every input names a step of the same workflow, and that there is
no cycle. Every error names its key path and, when the file has it, its line:

    workflows.demo.steps.examples.params.dupe_factor: must be >= 1 (line 31)
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bertflow.contracts import storage
from bertflow.contracts.config import data_paths

from .kinds import KINDS

# Values a recipe ships with for the user to replace: YOUR-BUCKET, REGISTRY/image,
# <project>, example.com.
PLACEHOLDER = re.compile(r"YOUR[-_][A-Z]|\bREGISTRY\b|<[^<>\s]+>|\bexample\.(com|org|net)\b")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BeamSettings(Strict):
    """``runner``: DirectRunner (local, multi-process FnApiRunner), DataflowRunner,
    FlinkRunner, SparkRunner, ...; ``options``: Beam pipeline flags passed through
    (``{project: p, region: r, temp_location: gs://...}``)."""

    runner: str = "DirectRunner"
    options: dict[str, Any] = {}


class RaySettings(Strict):
    """``address`` (``auto``, ``ray://head:10001``) connects to a cluster; without it a
    local Ray starts with exactly ``num_cpus`` / ``num_gpus``."""

    address: str | None = None
    num_cpus: float | None = Field(default=None, gt=0)
    num_gpus: float | None = Field(default=None, ge=0)


class ResourcesSpec(Strict):
    workers: int = Field(default=1, ge=1)
    cpus_per_worker: float = Field(default=1, gt=0)
    gpus_per_worker: float = Field(default=0, ge=0)


class StepSpec(Strict):
    kind: str
    inputs: dict[str, str | list[str]] = {}
    params: dict[str, Any] = {}
    resources: ResourcesSpec = ResourcesSpec()


class WorkflowSpec(Strict):
    description: str = ""
    # Per-workflow overrides of the defaults (a real recipe runs on Dataflow and a Ray
    # cluster while the demo in the same file runs locally).
    storage: str | None = None
    beam: BeamSettings | None = None
    ray: RaySettings | None = None
    steps: dict[str, StepSpec] = Field(min_length=1)


class Spec(Strict):
    storage: str = "./runs"
    beam: BeamSettings = BeamSettings()
    ray: RaySettings = RaySettings()
    parallel_steps: int = Field(default=2, ge=1)
    workflows: dict[str, WorkflowSpec] = Field(min_length=1)


class SpecError(Exception):
    """A spec that cannot run; ``errors`` are ``key.path: message`` lines."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "extra_forbidden": "unknown key",
    "missing": "required",
}


def _message(err: dict) -> str:
    template = _MESSAGES.get(err["type"])
    if template:
        ctx = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in err.get("ctx", {}).items()}
        return template.format(**ctx)
    msg = err["msg"]
    return msg[0].lower() + msg[1:] if msg else msg


def _join(*parts: Any) -> str:
    return ".".join(str(p) for p in parts if p != "")


def pydantic_errors(e: ValidationError, prefix: str = "") -> list[str]:
    out = []
    for err in e.errors():
        # Union branches add their type name to the location; drop it.
        loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "list")))]
        out.append(f"{_join(prefix, *loc)}: {_message(err)}")
    return out


class Workflow:
    """A validated workflow: its steps in dependency order with their kinds' Params."""

    def __init__(self, name: str, spec: Spec, wf: WorkflowSpec, base_dir: Path,
                 with_lines: Callable[[list[str]], list[str]] = list):
        self.name, self.base_dir = name, base_dir
        self._with_lines = with_lines
        self.storage = wf.storage or spec.storage
        self.beam = wf.beam or spec.beam
        self.ray = wf.ray or spec.ray
        self.parallel_steps = spec.parallel_steps
        self.steps = wf.steps
        self.params = {n: KINDS[s.kind].Params.model_validate(s.params) for n, s in wf.steps.items()}
        self.order = topological_order({n: deps(s) for n, s in wf.steps.items()})

    def data_errors(self, steps: Iterable[str] | None = None, remote: bool = True) -> list[str]:
        """What the data files of ``steps`` (default: every step) hold that their kinds
        refuse (``StepKind.check_data``: a fine-tuning CSV without its label column), read
        from a bounded head of each: ``key.path: message (line N)`` lines, as errors are.
        ``remote``: read files in stores too (``run``), else local files only (``validate``)."""
        resolve = functools.partial(storage.absolute, base_dir=self.base_dir)
        errors = []
        for name in self.order if steps is None else steps:
            kind = KINDS[self.steps[name].kind]
            at = f"workflows.{self.name}.steps.{name}"
            errors += [f"{at}.{m}" for m in kind.check_data(self.params[name], resolve, remote)]
        return self._with_lines(errors)

    def inputs(self, step: str) -> dict[str, list[str]]:
        return {k: [v] if isinstance(v, str) else list(v) for k, v in self.steps[step].inputs.items()}

    def upstream(self, step: str) -> set[str]:
        """The step and every step it needs, transitively."""
        seen, todo = set(), [step]
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo.extend(deps(self.steps[s]))
        return seen

    def downstream(self, step: str) -> set[str]:
        return {s for s in self.order if step in self.upstream(s)}


def deps(step: StepSpec) -> list[str]:
    out: list[str] = []
    for v in step.inputs.values():
        out.extend([v] if isinstance(v, str) else v)
    return out


def topological_order(graph: dict[str, list[str]]) -> list[str]:
    """Steps ordered so that each comes after what it reads; ties keep spec order."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == "done":
            return
        if state.get(node) == "visiting":
            cycle = path[path.index(node):] + [node]
            raise SpecError([f"cycle: {' -> '.join(cycle)}"])
        state[node] = "visiting"
        for d in graph[node]:
            visit(d, path + [node])
        state[node] = "done"
        order.append(node)

    for node in graph:
        visit(node, [])
    return order


class SpecFile:
    """A parsed, validated ``workflows.yaml``."""

    def __init__(self, raw: dict, path: Path | None = None, lines: dict[tuple, int] | None = None):
        self.path = path
        self.base_dir = (path.parent if path else Path.cwd()).resolve()
        self._lines = lines or {}
        try:
            self.spec = Spec.model_validate(raw)
        except ValidationError as e:
            raise SpecError(self._with_lines(pydantic_errors(e))) from None
        errors: list[str] = []
        for wname, wf in self.spec.workflows.items():
            errors += self._check_workflow(wname, wf)
        if errors:
            raise SpecError(self._with_lines(errors))

    def _check_workflow(self, wname: str, wf: WorkflowSpec) -> list[str]:
        errors: list[str] = []
        for sname, step in wf.steps.items():
            at = f"workflows.{wname}.steps.{sname}"
            kind = KINDS.get(step.kind)
            if kind is None:
                errors.append(f"{at}.kind: unknown step kind '{step.kind}' (known kinds: {', '.join(sorted(KINDS))})")
                continue
            try:
                params = kind.Params.model_validate(step.params)
            except ValidationError as e:
                errors += pydantic_errors(e, f"{at}.params")
            else:
                errors += [f"{at}.{m}" for m in kind.check(params, set(step.inputs))]
            for iname, src in step.inputs.items():
                decl = kind.inputs.get(iname)
                if decl is None:
                    known = ", ".join(kind.inputs) or "none"
                    errors.append(f"{at}.inputs.{iname}: '{step.kind}' has no input '{iname}' (its inputs: {known})")
                    continue
                if isinstance(src, list) and not decl.many:
                    errors.append(f"{at}.inputs.{iname}: takes one step, not a list")
                for s in [src] if isinstance(src, str) else src:
                    if s not in wf.steps:
                        errors.append(f"{at}.inputs.{iname}: no step '{s}' in workflow '{wname}'")
                    elif s == sname:
                        errors.append(f"{at}.inputs.{iname}: a step cannot read its own output")
            for iname, decl in kind.inputs.items():
                if decl.required and iname not in step.inputs:
                    errors.append(f"{at}.inputs.{iname}: required")
        if not errors:
            try:
                topological_order({n: deps(s) for n, s in wf.steps.items()})
            except SpecError as e:
                errors += [f"workflows.{wname}.steps: {m}" for m in e.errors]
        return errors

    def _with_lines(self, errors: list[str]) -> list[str]:
        out = []
        for err in errors:
            path, _, _ = err.partition(": ")
            key = tuple(path.split("."))
            # The deepest part of the path that the file has gives the line.
            while key and key not in self._lines:
                key = key[:-1]
            out.append(f"{err} (line {self._lines[key]})" if key else err)
        return out

    def warnings(self, workflow: str | None = None) -> list[str]:
        """What would fail only once a run reaches it, for ``workflow`` (every workflow when
        None): values that look like a recipe's placeholders, and local data paths with
        nothing there. ``key.path: message (line N)`` lines, as errors are."""
        out: list[str] = []
        for wname in [workflow] if workflow else self.workflows:
            wf = self.spec.workflows[wname]
            at = f"workflows.{wname}"
            settings = {
                # A workflow's own storage/beam/ray, else the file's defaults, where they are written.
                "storage": (f"{at}.storage" if wf.storage else "storage", wf.storage or self.spec.storage),
                "beam": (f"{at}.beam" if wf.beam else "beam", (wf.beam or self.spec.beam).model_dump()),
                "ray": (f"{at}.ray" if wf.ray else "ray", (wf.ray or self.spec.ray).model_dump()),
            }
            values = [(path, value) for path, v in settings.values() for path, value in _leaves(v, path)]
            for sname, step in wf.steps.items():
                values += _leaves(step.params, f"{at}.steps.{sname}.params")
            for path, value in values:
                if isinstance(value, str) and PLACEHOLDER.search(value):
                    out.append(f"{path}: '{value}' looks like a placeholder: put in your own value")
            stores = [settings["storage"]]
            for sname, step in wf.steps.items():
                params = KINDS[step.kind].Params.model_validate(step.params)
                for key, value in data_paths(params).items():
                    if "://" in value and not value.startswith("file://"):
                        # A store's objects: checked by the run, with the store's credentials.
                        stores.append((f"{at}.steps.{sname}.params.{key}", value))
                        continue
                    url = storage.absolute(value, self.base_dir)
                    if not (storage.glob(url) if any(c in url for c in "*?[") else Path(url.removeprefix("file://")).exists()):
                        out.append(f"{at}.steps.{sname}.params.{key}: {url}: no such file or folder")
            # A store whose fsspec backend (its extra) is not installed: one line a workflow and
            # store kind; `run` stops at it (preflight).
            lacking: set[str] = set()
            for path, url in stores:
                missing = storage.missing_backend(url)
                if missing and url.split("://")[0] not in lacking:
                    lacking.add(url.split("://")[0])
                    out.append(f"{path}: {missing}")
        return self._with_lines(list(dict.fromkeys(out)))

    @property
    def workflows(self) -> list[str]:
        return list(self.spec.workflows)

    def workflow(self, name: str) -> Workflow:
        if name not in self.spec.workflows:
            raise SpecError([f"workflows.{name}: no such workflow (this file has: {', '.join(self.workflows)})"])
        return Workflow(name, self.spec, self.spec.workflows[name], self.base_dir, self._with_lines)


def _leaves(value: Any, path: str) -> list[tuple[str, Any]]:
    """``(key.path, value)`` of every scalar in nested mappings and lists."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{path}.{i}")]
    return [(path, value)]


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = path + (str(k.value),)
            out[key] = k.start_mark.line + 1
            _line_index(v, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[path + (str(i),)] = v.start_mark.line + 1
            _line_index(v, path + (str(i),), out)
    return out


def set_value(raw: dict, assignment: str, workflow: str | None = None) -> None:
    """Apply ``--set STEP.PARAM=VALUE`` (VALUE read as YAML; a number in the path indexes a
    list: ``finetune.tasks.0.epochs=2``) to STEP of ``workflow``, or of every workflow that
    has it when no workflow is named (``validate``)."""
    key, sep, value = assignment.partition("=")
    parts = key.split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise SpecError([f"--set {assignment}: expected STEP.PARAM=VALUE"])
    bracketed = next((part for part in parts if "[" in part or "]" in part), None)
    if bracketed is not None:
        # Brackets would otherwise pass as a key of their own and fail later as an
        # unknown parameter, without saying that a list is indexed with a dot.
        dotted = re.sub(r"\.?\[(\d+)\]", r".\1", key)
        form = f"--set {dotted}={value}" if "[" not in dotted and "]" not in dotted else "--set STEP.PARAM.0.KEY=VALUE"
        raise SpecError([f"--set {assignment}: '{bracketed}' is not a key; a number in the path "
                         f"indexes a list, after a dot: {form}"])
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise SpecError([f"--set {assignment}: the value is not valid YAML ({detail})"]) from None
    step, *param = parts
    workflows = raw.get("workflows") if isinstance(raw.get("workflows"), dict) else {}
    if workflow is not None:
        if workflow not in workflows:
            return  # Spec.workflow says which workflows there are
        workflows = {workflow: workflows[workflow]}
    found = False
    for wf in workflows.values():
        steps = wf.get("steps") if isinstance(wf, dict) else None
        if isinstance(steps, dict) and isinstance(steps.get(step), dict):
            found = True
            if steps[step].get("params") is None:
                steps[step]["params"] = {}
            _assign(steps[step]["params"], step, param, parsed, assignment)
    if not found:
        where = f"workflow '{workflow}'" if workflow is not None else "any workflow"
        raise SpecError([f"--set {assignment}: no step '{step}' in {where}"])


def _assign(params: dict, step: str, path: list[str], value: Any, assignment: str) -> None:
    """Set ``params[path...] = value``, making mappings on the way; a number indexes a list."""
    node: Any = params
    for i, part in enumerate(path):
        where = ".".join([step, *path[:i]])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError([f"--set {assignment}: {where} is a list of {len(node)}, "
                                 f"'{part}' is not one of its indices"])
            part = int(part)
        elif not isinstance(node, dict):
            raise SpecError([f"--set {assignment}: {where} is {node!r}, not a mapping or a list "
                             f"(set it whole: --set {where}=...)"])
        if i == len(path) - 1:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]


def load(path: str | Path, sets: list[str] = (), storage: str | None = None, workflow: str | None = None) -> SpecFile:
    """The workflows file at ``path``, with ``sets`` applied to ``workflow`` (to every
    workflow when None) and ``storage`` as every workflow's root when given."""
    path = Path(path)
    if not path.exists():
        raise SpecError([f"{path}: no such file (give the workflows file with -f)"])
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
        lines = _line_index(yaml.compose(text)) if raw else {}
    except yaml.YAMLError as e:
        raise SpecError([f"{path}: not valid YAML: {e}"]) from None
    if not isinstance(raw, dict):
        raise SpecError([f"{path}: expected a mapping with a 'workflows' key"])
    for s in sets:
        set_value(raw, s, workflow)
    if storage:
        raw["storage"] = storage
        for wf in (raw.get("workflows") or {}).values():
            if isinstance(wf, dict):
                wf.pop("storage", None)
    return SpecFile(raw, path, lines)
