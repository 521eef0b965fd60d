"""Prompt suites: a YAML file that names transcoders, prompts, the model and the parameters.

    name: toy-nightly
    transcoders: [toy-clt, toy-plt]          # presets, local folders or owner/repo[@rev]
    prompts: ["Mary and John went ...", ...]  # and/or
    prompts_file: ioi-prompts.txt             # one per line, in the suite file's folder
    model: toy-gpt2                           # optional: else each preset's model
    parameters: {max_feature_nodes: 512, node_threshold: 0.8}
    regression_margin: 0.02                   # a drop larger than this is a regression
    task_runner: {kind: dask, workers: 2}     # optional fan-out over processes of one run
    fan_out: true                             # optional: a child flow run per transcoder on
                                              # the work pool (workers on many machines)
    eval_corpus: held-out.txt                 # optional: the evaluate stage's tokens (a file
    eval_tokens: 4096                         # in the suite's folder) and their cap
    corpus: grammar.jsonl                     # optional: the feature dashboards' corpus

Validation errors name the file, the line and the field. ``prompts_file``, ``eval_corpus`` and
``corpus`` must stay inside the suite file's folder unless the person running tracerflow sets
``TRACERFLOW_ALLOW_OUTSIDE_PATHS=1``.
Shipped suites (``tracerflow/suites/``) can be named without a path (``toy-nightly``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from tracerflow.errors import ConfigError, UsageError
from tracerflow.fsutil import read_small_file
from tracerflow.parameters import RunOptions, parameter_field
from tracerflow.settings import get_settings

# The options a suite sets at its top level (files resolved in the suite's folder); every other
# run option goes under ``parameters:``.
SUITE_LEVEL_OPTIONS = ("model", "corpus", "eval_corpus", "eval_tokens")

# A suite's ``parameters:``: the run's options (tracerflow.parameters.RunOptions), their types,
# defaults, limits and help, less the suite-level ones. Plain pydantic (not RunOptions' frozen
# model), so a bad value is a ValidationError that ``load_suite`` turns into file:line: field.
Parameters = create_model(
    "Parameters",
    __config__=ConfigDict(extra="forbid"),
    **{
        name: (field.annotation, field)
        for name, field in RunOptions.model_fields.items()
        if name not in SUITE_LEVEL_OPTIONS
    },
)  # type: ignore[call-overload]


class TaskRunnerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["sequential", "dask"] = "sequential"
    workers: int = Field(default=2, ge=1)
    address: str | None = None  # an existing Dask scheduler, e.g. tcp://10.0.0.5:8786


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    transcoders: list[str] = Field(min_length=1)
    prompts: list[str] = Field(default_factory=list)
    prompts_file: str | None = None
    model: str | None = parameter_field(RunOptions, "model")
    corpus: str | None = None  # dashboards corpus file (text or JSONL), in the suite's folder
    parameters: Parameters = Field(default_factory=Parameters)  # type: ignore[valid-type]
    regression_margin: float = Field(default=0.02, ge=0.0)
    task_runner: TaskRunnerSpec = Field(default_factory=TaskRunnerSpec)
    fan_out: bool = False  # each transcoder a child flow run on the work pool (flows/fan_out.py)
    eval_corpus: str | None = None  # the evaluate stage's corpus (None: the preset's, prompts)
    eval_tokens: int | None = parameter_field(RunOptions, "eval_tokens")

    @model_validator(mode="after")
    def _needs_prompts(self) -> Suite:
        if not self.prompts and not self.prompts_file:
            raise ValueError("a suite needs 'prompts' or 'prompts_file'")
        return self


class LoadedSuite(BaseModel):
    """A validated suite with its prompts read in and where it came from."""

    suite: Suite
    path: str
    prompts: list[str]
    corpus: str | None = None  # ``suite.corpus`` resolved (checked with the run request)
    eval_corpus: str | None = None  # the suite's eval_corpus, resolved


# Bounds on what a run reads whole: a prompt is one line, and a suite a page of YAML.
MAX_PROMPTS_FILE_BYTES = 64 * 2**20
MAX_SUITE_FILE_BYTES = 2**20


def read_prompts_file(path: Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped. ``UsageError``
    for a missing, binary or non-UTF-8 file, or one without prompts."""
    try:
        data = read_small_file(path, MAX_PROMPTS_FILE_BYTES, "prompts file")
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if b"\0" in data:
        raise UsageError(f"{path}: not a text file (it holds NUL bytes); give one prompt a line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path}: not UTF-8 text (byte {error.start} cannot be decoded); give one prompt a "
            "line in UTF-8"
        ) from None
    prompts = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    if not prompts:
        raise UsageError(f"{path}: no prompts in the file")
    return prompts


def builtin_suites_dir() -> Path:
    return Path(str(resources.files("tracerflow") / "suites"))


def find_suite_file(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    builtin = builtin_suites_dir() / f"{name_or_path}.yaml"
    if "/" not in name_or_path and builtin.is_file():
        return builtin
    known = ", ".join(sorted(p.stem for p in builtin_suites_dir().glob("*.yaml")))
    raise ConfigError(f"suite '{name_or_path}' is not a file nor a built-in suite ({known})")


def resolve_suite_path(suite_path: Path, value: str, allow_outside: bool, where: str) -> Path:
    """``value`` (a path a suite file names) resolved against the suite file's folder.

    Raises:
        ConfigError: ``value`` is no file name (it holds a NUL byte); or it is absolute, or
            resolves (through ``..`` or a symlink) outside the suite file's folder, and
            ``allow_outside`` is off. ``where`` starts the message (``file:line: field 'name'``).
    """
    folder = suite_path.parent.resolve()
    try:
        resolved = (folder / value).resolve()
    except ValueError as error:  # a NUL byte, or a lone surrogate no file name can hold
        raise ConfigError(f"{where}: {value!r} is not a file name ({error})") from None
    if allow_outside:
        return resolved
    hint = "set TRACERFLOW_ALLOW_OUTSIDE_PATHS=1 to allow it"
    if Path(value).is_absolute():
        raise ConfigError(
            f"{where}: {value} is an absolute path; a suite reads files in its own folder "
            f"({folder}) only: name it relative to the suite file, or {hint}"
        )
    if not resolved.is_relative_to(folder):
        raise ConfigError(
            f"{where}: {value} leads outside the suite file's folder ({folder}, resolved to "
            f"{resolved}); a suite reads files in its own folder only: {hint}"
        )
    return resolved


def load_suite(name_or_path: str | Path, allow_outside_paths: bool | None = None) -> LoadedSuite:
    """Read and validate a suite file (a path or a built-in suite's name) and its prompts.

    Args:
        allow_outside_paths: let ``prompts_file`` name a file outside the suite file's folder;
            ``None``: the ``allow_outside_paths`` setting (``$TRACERFLOW_ALLOW_OUTSIDE_PATHS``).
    """
    if allow_outside_paths is None:
        allow_outside_paths = get_settings().allow_outside_paths
    path = find_suite_file(str(name_or_path))
    try:
        text = read_small_file(path, MAX_SUITE_FILE_BYTES, "suite file").decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); a suite is YAML") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise _yaml_error(path, text, error) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a suite file must be a mapping (name, transcoders, prompts)")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "(top level)"
        line = _line_of(text, first["loc"])
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: field '{location}': {first['msg']}") from error
    prompts = list(suite.prompts)
    if suite.prompts_file:
        where = f"{path}:{_line_of(text, ('prompts_file',))}: field 'prompts_file'"
        prompts_path = resolve_suite_path(path, suite.prompts_file, allow_outside_paths, where)
        if not prompts_path.is_file():
            raise ConfigError(f"{where}: {prompts_path} does not exist")
        prompts += read_prompts_file(prompts_path)
    corpus = _suite_file(path, text, "corpus", suite.corpus, allow_outside_paths)
    eval_corpus = _suite_file(path, text, "eval_corpus", suite.eval_corpus, allow_outside_paths)
    return LoadedSuite(
        suite=suite,
        path=str(path.resolve()),
        prompts=prompts,
        corpus=corpus,
        eval_corpus=eval_corpus,
    )


def _yaml_error(path: Path, text: str, error: yaml.YAMLError) -> ConfigError:
    """``FILE:LINE: not valid YAML (problem)`` in one line: PyYAML's own message spans several,
    with the offending source line and a caret under it."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        line, problem = error.problem_mark.line + 1, error.problem or error.context
    elif isinstance(error, yaml.reader.ReaderError):  # a character YAML does not allow (NUL)
        line = text.count("\n", 0, error.position) + 1
        problem = f"unacceptable character #x{error.character:04x}: {error.reason}"
    else:
        return ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})")
    return ConfigError(f"{path}:{line}: not valid YAML ({problem})")


def _suite_file(
    path: Path, text: str, field: str, value: str | None, allow_outside_paths: bool
) -> str | None:
    """A file a suite names in ``field`` (``corpus``, ``eval_corpus``), resolved in the suite's
    folder; ``ConfigError`` with the file, line and field when it is outside or missing."""
    if not value:
        return None
    where = f"{path}:{_line_of(text, (field,))}: field '{field}'"
    resolved = resolve_suite_path(path, value, allow_outside_paths, where)
    if not resolved.is_file():
        raise ConfigError(f"{where}: {resolved} does not exist")
    return str(resolved)


def _line_of(text: str, location: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at ``location`` (or of its nearest existing parent)."""
    node = yaml.compose(text)
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            match = [value for key, value in node.value if key.value == part]
            if not match:
                return line
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line
