"""Presets: named (model, transcoder, attribution defaults) triples, kept as data.

The registry is ``presets.yaml`` next to this module; adding a preset is adding an entry there.
A preset's ``transcoder`` is either a Hugging Face repo id (``owner/name``) or a package-data
reference ``package:<module>/<path>`` (the built-in toy transcoders), resolved at run time with
``importlib.resources`` so that no path of a particular checkout is ever stored.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tracerflow.errors import ConfigError
from tracerflow.parameters import AttributionParams, RunOptions, RunParameters, parameter_field
from tracerflow.toy.grammar import BUILTIN_PROMPTS as _BUILTIN_PROMPTS

PACKAGE_PREFIX = "package:"
PRESETS_FILE = "presets.yaml"

BUILTIN_PROMPTS: tuple[str, ...] = _BUILTIN_PROMPTS
"""Prompts of the toy grammar (the notebook's prompt first): the built-in suite."""


def builtin_prompts() -> list[str]:
    """The built-in suite's prompts, the notebook's "Mary and John ..." first."""
    return list(BUILTIN_PROMPTS)


_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class Layout(BaseModel):
    """The transcoder files a Hub preset downloads, as its repo lays them out (docs/presets.md):
    enough to tell the download size before anything is downloaded. Per layer: PLT files
    (circuit-tracer ``layer_{i}.safetensors``, GemmaScope ``params.npz``) hold ``W_enc`` and
    ``W_dec`` [F, d], ``b_enc`` [F], ``b_dec`` [d], thresholds [F] and ``W_skip`` [d, d] where
    there; a circuit-tracer CLT's ``W_enc_{i}`` file the same encoder, its ``W_dec_{i}``
    [F, L - i, d]; a crosslayer-transcoder checkpoint one file of all layers (a CLT decodes into
    every later layer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["crosslayer-transcoder", "circuit-tracer", "gemma-scope"]
    n_layers: int = Field(gt=0)
    d_model: int = Field(gt=0)
    d_features: int | None = Field(default=None, gt=0)  # per layer; None: not known
    dtype: Literal["float32", "bfloat16", "float16"]
    thresholds: bool = False  # JumpReLU thresholds, one per feature and layer
    skip: bool = False  # a W_skip [d, d] per layer
    k: int | None = Field(default=None, gt=0)  # TopK's k, for the memory estimate; None: no k

    def tensor_bytes(self, kind: Literal["clt", "plt"]) -> int | None:
        """The bytes of every tensor the files hold (their headers aside); None when the
        feature count is not known."""
        if self.d_features is None:
            return None
        layers, d, features = self.n_layers, self.d_model, self.d_features
        per_layer = features * d + features + d  # W_enc, b_enc, b_dec
        per_layer += features if self.thresholds else 0
        per_layer += d * d if self.skip else 0
        decoder_rows = layers * (layers + 1) // 2 if kind == "clt" else layers
        return (layers * per_layer + decoder_rows * features * d) * _DTYPE_BYTES[self.dtype]


class Preset(BaseModel):
    """One named configuration: which model, which transcoder, which attribution parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    model: str  # "toy-gpt2" or a TransformerLens model name such as "gpt2"
    transcoder: str  # HF repo id, or "package:<module>/<path>"
    revision: str | None = None  # Hub revision of the transcoder (None: the default branch)
    kind: Literal["clt", "plt"]
    # The attribution defaults; their limits are AttributionParams' and RunParameters'.
    max_n_logits: int = parameter_field(AttributionParams, "max_n_logits")
    desired_logit_prob: float = parameter_field(AttributionParams, "desired_logit_prob")
    max_feature_nodes: int | None = parameter_field(AttributionParams, "max_feature_nodes")
    batch_size: int | None = parameter_field(AttributionParams, "batch_size")
    node_threshold: float = parameter_field(RunParameters, "node_threshold")
    edge_threshold: float = parameter_field(RunParameters, "edge_threshold")
    eval_corpus: str | None = None  # evaluate stage corpus: path or "package:..."; None: prompts
    # dashboards stage corpus (feature examples): path or "package:..."; None: the run's prompts
    dashboard_corpus: str | None = None
    # the prompts the transcoder's own demos use (circuit-tracer's demos for its sets)
    prompts: tuple[str, ...] = ()
    layout: Layout | None = None  # a Hub transcoder's files; None for built-in ones

    def download_bytes(self) -> int | None:
        """What downloading the transcoder fetches, from its layout: 0 for a built-in one, None
        when its layout (or feature count) is not known."""
        if self.is_builtin:
            return 0
        return self.layout.tensor_bytes(self.kind) if self.layout is not None else None

    @property
    def is_builtin(self) -> bool:
        """True when the transcoder ships inside the package (no download needed)."""
        return self.transcoder.startswith(PACKAGE_PREFIX)

    def transcoder_path(self) -> Path:
        """The local checkpoint folder of a built-in preset.

        Raises ``ConfigError`` for a Hub preset (download it instead) or when the package is
        installed in a form without real files (e.g. a zip).
        """
        if not self.is_builtin:
            raise ConfigError(
                f"preset '{self.name}': transcoder '{self.transcoder}' is a Hub repo, not package "
                "data; download it first"
            )
        return resolve_package_path(self.transcoder)

    def transcoder_source(self) -> str:
        """What the download stage resolves: a local folder, or ``owner/repo[@revision]``."""
        if self.is_builtin:
            return str(self.transcoder_path())
        return f"{self.transcoder}@{self.revision}" if self.revision else self.transcoder

    def attribution_params(self) -> AttributionParams:
        """The arguments of circuit-tracer's ``attribute`` this preset fixes."""
        return AttributionParams(
            max_n_logits=self.max_n_logits,
            desired_logit_prob=self.desired_logit_prob,
            max_feature_nodes=self.max_feature_nodes,
            batch_size=self.batch_size,
        )

    def run_parameters(self) -> RunParameters:
        """This preset's parameters for a run that sets none of its own."""
        return RunParameters(
            attribution=self.attribution_params(),
            node_threshold=self.node_threshold,
            edge_threshold=self.edge_threshold,
        )


def resolve_package_path(reference: str) -> Path:
    """``package:tracerflow.toy/data/clt`` -> the folder inside the installed package."""
    if not reference.startswith(PACKAGE_PREFIX):
        raise ConfigError(f"'{reference}' is not a '{PACKAGE_PREFIX}<module>/<path>' reference")
    module, _, relative = reference[len(PACKAGE_PREFIX) :].partition("/")
    try:
        resource = files(module).joinpath(*relative.split("/"))
    except ModuleNotFoundError as error:
        raise ConfigError(f"'{reference}': no package '{module}'") from error
    if not isinstance(resource, Path):
        raise ConfigError(
            f"'{reference}' does not resolve to a folder on disk ({resource}); install tracerflow "
            "as regular files (pip install -e . or a wheel), not as a zip"
        )
    if not resource.exists():
        raise ConfigError(f"'{reference}': {resource} does not exist")
    return resource


@cache
def _load_presets() -> tuple[Preset, ...]:
    text = files("tracerflow").joinpath(PRESETS_FILE).read_text()
    entries = yaml.safe_load(text)
    if not isinstance(entries, list):
        raise ConfigError(f"tracerflow/{PRESETS_FILE}: expected a list of presets")
    try:
        presets = tuple(Preset.model_validate(entry) for entry in entries)
    except ValidationError as error:
        raise ConfigError(f"tracerflow/{PRESETS_FILE}: invalid preset ({error})") from error
    names = [preset.name for preset in presets]
    if len(set(names)) != len(names):
        raise ConfigError(f"tracerflow/{PRESETS_FILE}: duplicate preset names in {names}")
    return presets


def list_presets() -> list[Preset]:
    """Every known preset, in the registry's order (built-in toy presets first)."""
    return list(_load_presets())


def find_preset(name: str) -> Preset | None:
    """The preset called ``name``, or None when ``name`` is not a preset (a path, a repo id)."""
    return next((preset for preset in _load_presets() if preset.name == name), None)


def run_parameters(source: str, options: RunOptions) -> RunParameters:
    """A transcoder's parameters in a run: the run's ``options`` where they give one, else its
    preset's when ``source`` is a preset, else the defaults (``RunOptions.parameters_for``)."""
    preset = find_preset(source)
    return options.parameters_for(preset.run_parameters() if preset is not None else None)


def preset_file(source: str, field: Literal["eval_corpus", "dashboard_corpus"]) -> str | None:
    """The file the preset called ``source`` names in ``field`` (a path, or a ``package:``
    reference resolved in the installed package); None when ``source`` is no preset or its
    preset names none."""
    preset = find_preset(source)
    value = getattr(preset, field) if preset is not None else None
    if value is None:
        return None
    if value.startswith(PACKAGE_PREFIX):
        return str(resolve_package_path(value))
    return str(Path(value).expanduser().resolve())
