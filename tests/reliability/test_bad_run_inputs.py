"""A bad run input is refused before anything starts: one line, exit 2, no Prefect server (its
log is never opened), nothing written to the score database, and Prefect not even imported. The
seconds each refusal took are printed (about half a second in a fresh interpreter here, against
16-19 s for a temporary Prefect server), not asserted: a loaded machine stretches them, and what
matters is that no server started.

The ``CASES`` run in one fresh interpreter, one after another through the command's own entry
point, each in a home of its own: an interpreter's start costs more CPU than a refusal, and
sixty of them were a minute of the suite. The environment the command reads at import (offline,
an empty Hugging Face cache, no Prefect API) is set before anything is imported, as in a
terminal. The tests after ``CASES`` each start the command in an interpreter of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tracerflow.flows.validation import validate_run_request
from tracerflow.machine import cuda_device_count
from tracerflow.parameters import run_request

TOY = ["--preset", "toy-clt"]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def suite_file(
    folder: Path,
    parameters: str,
    prompts: str = '["Mary and John went"]',
    corpus: str = "",
    model: str = "",
) -> Path:
    path = folder / "bad-suite.yaml"
    path.write_text(
        f"name: bad\ntranscoders: [toy-clt]\nprompts: {prompts}\nparameters: {parameters}\n"
        + (f"corpus: {corpus}\n" if corpus else "")
        + (f"model: {model}\n" if model else "")
    )
    return path


SUITE_HEAD = b"name: bad\ntranscoders: [toy-clt]\n"

CASES: dict[str, tuple[object, str]] = {
    "empty prompt": ([*TOY, "--prompt", ""], "prompt 1 is empty"),
    "blank prompt": ([*TOY, "--prompt", "Mary", "--prompt", "   "], "prompt 2 is empty"),
    "prompt too long for the toy model": (
        [*TOY, "--prompt", "a" * 10_000],
        "toy-gpt2 takes at most 64",
    ),
    "prompt just over the toy context": (
        [*TOY, "--prompt", " ".join(["Mary"] * 64)],
        "has 65 tokens; toy-gpt2 takes at most 64",
    ),
    "prompt too long for a Hub model": (
        ["--transcoder", "owner/clt", "--prompt", "a" * 10_000],
        "has 10000 characters; tracerflow takes at most 8192",
    ),
    "an uncached Hub repo offline": (
        ["--model", "toy-gpt2", "--transcoder", "nobody/no-such-clt", "--prompt", "x"],
        "could not download nobody/no-such-clt@main: HF_HUB_OFFLINE is set and the repo is not in "
        "the Hugging Face cache",
    ),
    "unknown preset": (["--preset", "toy-ctl"], "unknown preset 'toy-ctl'; known presets: toy-clt"),
    "unknown transcoder name": (
        ["--transcoder", "toy-ctl", "--prompt", "x"],
        "transcoder 'toy-ctl' is not a preset",
    ),
    "missing folder": (
        ["--transcoder", "/nonexistent/clt", "--prompt", "x"],
        "transcoder folder '/nonexistent/clt' does not exist",
    ),
    "random folder": (
        lambda tmp: ["--transcoder", str(tmp), "--prompt", "x"],
        "is not a transcoder checkpoint folder: no config.yaml or checkpoint.safetensors",
    ),
    "a file, not a folder": (
        lambda tmp: ["--transcoder", str(write(tmp / "f.txt", b"x")), "--prompt", "x"],
        "is a file, not a checkpoint folder",
    ),
    "damaged checkpoint": (
        lambda tmp: ["--transcoder", str(damaged_checkpoint(tmp)), "--prompt", "x"],
        "checkpoint.safetensors: not a readable safetensors file",
    ),
    "circuit-tracer folder missing a layer": (
        lambda tmp: [
            "--transcoder",
            str(circuit_tracer_folder(tmp, drop="W_dec_1")),
            "--prompt",
            "x",
        ],
        "is not a transcoder checkpoint folder: no W_dec_1.safetensors",
    ),
    "circuit-tracer folder of another width than the model": (
        lambda tmp: [
            *["--transcoder", str(circuit_tracer_folder(tmp)), "--model", "toy-gpt2"],
            *["--prompt", "x"],
        ],
        "has 3 layers of d_model 16, but model 'toy-gpt2' has 3 layers of d_model 64",
    ),
    "Lightning checkpoint that needs a class": (
        lambda tmp: ["--transcoder", str(lightning_needing_a_class(tmp)), "--prompt", "x"],
        "clt.ckpt: needs tests.transcoders.foreign_formats.TrainingNotes, which torch's "
        "weights-only loader refuses",
    ),
    "max-feature-nodes 0": (
        [*TOY, "--max-feature-nodes", "0"],
        "--max-feature-nodes (max_feature_nodes) must be a whole number from 1 to 2147483647, "
        "got 0",
    ),
    "batch-size 0": ([*TOY, "--batch-size", "0"], "--batch-size (batch_size) must be"),
    "max-n-logits 0": ([*TOY, "--max-n-logits", "0"], "--max-n-logits (max_n_logits) must be"),
    "threads 0": ([*TOY, "--threads", "0"], "--threads (threads) must be a whole number from 1"),
    "a million threads": (
        [*TOY, "--threads", "1000000"],
        "--threads (threads) must be a whole number from 1 to 1024, got 1000000",
    ),
    "more logits than an int64": (
        [*TOY, "--max-n-logits", "99999999999999999999"],
        "--max-n-logits (max_n_logits) must be a whole number from 1 to 2147483647",
    ),
    "desired-logit-prob 0": (
        [*TOY, "--desired-logit-prob", "0"],
        "--desired-logit-prob (desired_logit_prob) must be in (0, 1], got 0.0",
    ),
    "desired-logit-prob above 1": ([*TOY, "--desired-logit-prob", "1.5"], "must be in (0, 1]"),
    "node-threshold 0": ([*TOY, "--node-threshold", "0"], "--node-threshold (node_threshold)"),
    "edge-threshold above 1": (
        [*TOY, "--edge-threshold", "2"],
        "--edge-threshold (edge_threshold)",
    ),
    "unknown model": (
        [*TOY, "--model", "no-such-model"],  # was a failed row after a Prefect server started
        "--model (model): unknown model 'no-such-model': neither 'toy-gpt2' nor a "
        "TransformerLens model name",
    ),
    "a Hub model offline and not cached": (
        [*TOY, "--model", "gpt2"],
        "--model (model): cannot load model 'gpt2': the Hugging Face repo 'gpt2' is not in the "
        "local cache",
    ),
    "a suite's unknown model": (
        lambda tmp: ["--suite", str(suite_file(tmp, "{}", model="no-such-model"))],
        "--model (model): unknown model 'no-such-model'",
    ),
    "unknown device": (
        [*TOY, "--device", "tpu"],
        "--device (device) must be cpu, cuda or cuda:N, got 'tpu'",
    ),
    "unknown dtype": (
        [*TOY, "--dtype", "nonsense"],
        "--dtype (dtype) must be one of float32, float16, bfloat16, got 'nonsense'",
    ),
    "float64": ([*TOY, "--dtype", "float64"], "--dtype (dtype) must be one of"),
    "unknown offload": (
        [*TOY, "--offload", "tape"],
        "--offload (offload) must be one of cpu, disk",
    ),
    "binary prompts file": (
        lambda tmp: [*TOY, "--prompts-file", str(write(tmp / "p.bin", bytes(range(256))))],
        "p.bin: not a text file (it holds NUL bytes)",
    ),
    "latin-1 prompts file": (
        lambda tmp: [
            *TOY,
            "--prompts-file",
            str(write(tmp / "p.txt", "Marie é\n".encode("latin-1"))),
        ],
        "p.txt: not UTF-8 text (byte 6 cannot be decoded)",
    ),
    "empty prompts file": (
        lambda tmp: [*TOY, "--prompts-file", str(write(tmp / "p.txt", b"# only a comment\n\n"))],
        "p.txt: no prompts in the file",
    ),
    "missing prompts file": (
        [*TOY, "--prompts-file", "/nonexistent/prompts.txt"],
        "/nonexistent/prompts.txt: prompts file does not exist",
    ),
    "no prompt without a preset": (
        ["--transcoder", "toy-clt"],
        "give at least one --prompt or a --prompts-file",
    ),
    "no transcoder": (["--prompt", "x"], "give at least one --transcoder or a --preset"),
    "suite with threshold 0": (
        lambda tmp: ["--suite", str(suite_file(tmp, "{node_threshold: 0}"))],
        "bad-suite.yaml:4: field 'parameters.node_threshold': Input should be greater than 0",
    ),
    "suite with an empty prompt": (
        lambda tmp: ["--suite", str(suite_file(tmp, "{}", prompts='[""]'))],
        "prompt 1 is empty",
    ),
    "missing corpus file": (
        [*TOY, "--corpus", "/nonexistent/corpus.txt"],
        "/nonexistent/corpus.txt: --corpus (corpus) file does not exist",
    ),
    "corpus is a folder": (
        lambda tmp: [*TOY, "--corpus", str(tmp)],
        "--corpus (corpus) file is a folder, not a file",
    ),
    "latin-1 corpus": (
        lambda tmp: [
            *TOY,
            "--corpus",
            str(write(tmp / "c.txt", "Mary\nMarie é\n".encode("latin-1"))),
        ],
        "c.txt:2: not UTF-8 text",
    ),
    "JSONL corpus with a bad line": (
        lambda tmp: [
            *TOY,
            "--corpus",
            str(write(tmp / "c.jsonl", b'{"text": "Mary"}\n{"text": 3}\n')),
        ],
        "c.jsonl:2: expected a JSON object with a string 'text' field",
    ),
    "empty corpus": (
        lambda tmp: [*TOY, "--corpus", str(write(tmp / "c.txt", b"\n  \n"))],
        "c.txt: --corpus (corpus) file holds no text",
    ),
    "suite with a missing corpus": (
        lambda tmp: ["--suite", str(suite_file(tmp, "{}", corpus="missing.txt"))],
        "bad-suite.yaml:5: field 'corpus': ",
    ),
    **{
        f"checkpoint with {how}": (
            lambda tmp, how=how: [
                "--transcoder",
                str(malformed_checkpoint(tmp, how)),
                "--prompt",
                "x",
            ],
            message,
        )
        for how, message in (
            ("class_path", "'os.system'"),
            ("negative d_features", "'model.init_args.decoder.init_args.d_features' is -5"),
            ("nan k", "'model.init_args.nonlinearity.init_args.k' must be a positive integer"),
            ("billion laughs", "anchors and aliases are not allowed here"),
            ("lying header", "checkpoint.safetensors"),
        )
    },
    "prompts file that never ends": (
        [*TOY, "--prompts-file", "/dev/zero"],  # was read until the kernel killed it at 22 GB
        "/dev/zero: the prompts file is not a regular file",
    ),
    "prompts file that is a pipe": (
        lambda tmp: [*TOY, "--prompts-file", str(fifo(tmp / "prompts"))],  # read() blocked
        "the prompts file is not a regular file",
    ),
    "prompts file over the bound": (
        lambda tmp: [*TOY, "--prompts-file", str(big_file(tmp / "p.txt", 64 * 2**20 + 1))],
        "the prompts file is larger than 64 MiB",
    ),
    "suite with a NUL in prompts_file": (  # was a ValueError traceback
        lambda tmp: [
            "--suite",
            str(write(tmp / "s.yaml", SUITE_HEAD + b'prompts_file: "a\\0b"\n')),
        ],
        "s.yaml:3: field 'prompts_file': 'a\\x00b' is not a file name (embedded null byte)",
    ),
    "suite with a corpus no file name can hold": (  # a lone surrogate: a UnicodeEncodeError
        lambda tmp: [
            "--suite",
            str(write(tmp / "s.yaml", SUITE_HEAD + b'prompts: [x]\ncorpus: "\\ud800"\n')),
        ],
        "s.yaml:4: field 'corpus': '\\ud800' is not a file name",
    ),
    "suite file with a NUL byte": (  # PyYAML's message was several lines
        lambda tmp: ["--suite", str(write(tmp / "s.yaml", SUITE_HEAD + b"prompts: [x]\0\n"))],
        "s.yaml:3: not valid YAML (unacceptable character #x0000",
    ),
    "suite file that does not parse": (
        lambda tmp: ["--suite", str(write(tmp / "s.yaml", b"name: bad\ntranscoders: [a\nb: 1\n"))],
        "s.yaml:3: not valid YAML (expected ',' or ']', but got ':')",
    ),
    "suite file that is not UTF-8": (
        lambda tmp: ["--suite", str(write(tmp / "s.yaml", SUITE_HEAD + b"prompts: [caf\xe9]\n"))],
        "s.yaml: not UTF-8 text (byte 46); a suite is YAML",
    ),
    "suite file over the bound": (
        lambda tmp: ["--suite", str(big_file(tmp / "big.yaml", 2**20 + 1))],
        "the suite file is larger than 1 MiB",
    ),
    "suite with dask workers 0": (
        lambda tmp: ["--suite", str(suite_file(tmp, "{}")), "--dask-workers", "0"],
        "--dask-workers must be a whole number from 1 to",
    ),
    "suite with a thousand dask workers": (
        lambda tmp: ["--suite", str(suite_file(tmp, "{}")), "--dask-workers", "1000"],
        "(this machine's CPUs), got 1000",
    ),
    "dask workers without a suite": (
        [*TOY, "--dask-workers", "2"],
        "--dask-workers fans out a --suite's run; give a --suite with it",
    ),
    "suite with prompts and options it would ignore": (
        lambda tmp: [
            "--suite",
            str(suite_file(tmp, "{}")),
            "--prompt",
            "x",
            "--max-n-logits",
            "3",
        ],
        "--suite runs its suite file as it is: --prompt, --max-n-logits cannot be given with it",
    ),
}


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def big_file(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)  # sparse: no disk used
    return path


def malformed_checkpoint(folder: Path, how: str) -> Path:
    """The toy CLT with one thing wrong (each was refused only after the run started, with a
    traceback, and recorded as a failed row)."""
    from tracerflow.tasks.download import resolve_source

    checkpoint = Path(shutil.copytree(resolve_source("toy-clt").path, folder / "clt"))
    config = checkpoint / "config.yaml"
    text = config.read_text()
    weights = checkpoint / "checkpoint.safetensors"
    if how == "class_path":
        config.write_text(text.replace("crosslayer_transcoder.model.clt.Encoder", "os.system", 1))
    elif how == "negative d_features":
        config.write_text(text.replace("d_features: 512", "d_features: -5", 1))
    elif how == "nan k":
        config.write_text(text.replace("k: 12", "k: .nan", 1))
    elif how == "billion laughs":
        laughs = "".join(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]\n"
                         for i in range(1, 9))  # fmt: skip
        config.write_text("l0: &l0 [lol]\n" + laughs + text)
    elif how == "lying header":  # a header that promises more bytes than the file holds
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    return checkpoint


def damaged_checkpoint(folder: Path) -> Path:
    from tracerflow.tasks.download import resolve_source

    checkpoint = Path(shutil.copytree(resolve_source("toy-clt").path, folder / "clt"))
    (checkpoint / "checkpoint.safetensors").write_bytes(b"\xff" * 64)
    return checkpoint


def circuit_tracer_folder(folder: Path, drop: str | None = None) -> Path:
    """An upstream fixture (3 layers, d_model 16) converted: circuit-tracer's CLT files."""
    from tests.transcoders.foreign_formats import UPSTREAM
    from tracerflow.transcoders import convert

    converted = convert(UPSTREAM / "a_clt_topk_folded", folder / "circuit-tracer")
    if drop is not None:
        (converted / f"{drop}.safetensors").unlink()
    return converted


def lightning_needing_a_class(folder: Path) -> Path:
    from tests.transcoders.foreign_formats import UPSTREAM, TrainingNotes, lightning_checkpoint

    notes = {"notes": TrainingNotes()}
    return lightning_checkpoint(
        UPSTREAM / "a_clt_topk_folded", folder / "ckpt", extra_hyper_parameters=notes
    )


def command_env(home: Path) -> dict[str, str]:
    """The environment of a refused command in ``home``: offline, no model cached (an empty
    Hugging Face cache beside the home), no Prefect API named."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "TRACERFLOW_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(home.parent / "empty-hf-cache"),
    }
    env.pop("PREFECT_API_URL", None)  # a bad input must not even reach the server question
    return env


def run_cli(arguments: list[str], home: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """``tracerflow run <arguments>`` in an interpreter of its own."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", "run", *arguments],
        env=command_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, time.monotonic() - started


# Runs each [home, arguments] read from stdin as `tracerflow run <arguments>` with its own
# TRACERFLOW_HOME (settings are read when a command runs); prints each one's exit code, output
# and seconds, and whether the process has imported Prefect, as JSON.
BATCH = """
import contextlib, io, json, os, sys, time
from tracerflow.cli import app
refusals = []
for home, arguments in json.loads(sys.stdin.read()):
    os.environ["TRACERFLOW_HOME"] = home
    stdout, stderr = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            app(["run", *arguments], prog_name="tracerflow")
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    seconds = time.monotonic() - started
    refusals.append([code, stdout.getvalue(), stderr.getvalue(), seconds])
print(json.dumps({"refusals": refusals, "prefect": "prefect" in sys.modules}))
"""


@dataclass(frozen=True)
class Refusal:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    home: Path


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Refusal]:
    """Every case of ``CASES`` run in one fresh interpreter (see the module's docstring), each
    with a folder of its own for the files it writes and its home."""
    root = tmp_path_factory.mktemp("refusals")
    batch = []
    for index, (arguments, _) in enumerate(CASES.values()):
        folder = root / f"case-{index}"
        folder.mkdir()
        batch.append(
            [str(folder / "home"), list(arguments(folder) if callable(arguments) else arguments)]
        )  # type: ignore[arg-type]
    done = subprocess.run(
        [sys.executable, "-c", BATCH],
        input=json.dumps(batch),
        env=command_env(root / "no-home"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""  # nothing went around the command's own output
    answer = json.loads(done.stdout)
    assert answer["prefect"] is False  # no refusal imported Prefect (nor started a server)
    return {
        case: Refusal(*refusal, home=Path(home))
        for case, refusal, (home, _) in zip(CASES, answer["refusals"], batch, strict=True)
    }


def assert_nothing_started(home: Path) -> None:
    """No temporary Prefect server was started (it opens its log first) and no database made."""
    assert not (home / "prefect" / "temporary-server.log").exists()
    assert not (home / "scores.duckdb").exists()


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_run_input_is_refused_at_once_in_one_line(
    case: str, refusals: dict[str, Refusal]
) -> None:
    _, message = CASES[case]
    result = refusals[case]

    print(f"{case}: {result.seconds:.2f} s")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr  # one line
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    assert_nothing_started(result.home)


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_at_once(tmp_path: Path) -> None:
    result, seconds = run_cli([*TOY, "--device", "cuda"], tmp_path / "home")

    print(f"--device cuda: {seconds:.2f} s")
    assert result.returncode == 2
    assert result.stderr == "error: --device cuda: CUDA is not available on this machine\n"
    assert_nothing_started(tmp_path / "home")


def test_a_bad_input_leaves_an_existing_database_untouched(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    database = write(home / "scores.duckdb", b"not touched")
    before = database.stat().st_mtime_ns

    result, _ = run_cli([*TOY, "--batch-size", "0"], home)

    assert result.returncode == 2
    assert database.read_bytes() == b"not touched" and database.stat().st_mtime_ns == before


def test_a_hub_model_in_the_offline_cache_passes_the_door(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The door refuses a model its download would not find, not every Hub model: one whose
    ``config.json`` is in the Hugging Face cache (laid out as a download leaves it) passes."""
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--gpt2"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    transcoder = tmp_path / "hub" / "models--owner--clt"  # offline, the transcoder is cached too
    shutil.copytree(repo, transcoder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    for alias in ("gpt2", "GPT2-small"):  # TransformerLens's names, aliases too
        validate_run_request(run_request(transcoders=["owner/clt"], prompts=["x"], model=alias))


def test_a_preset_run_on_a_model_of_another_shape_is_refused_at_the_door(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    """A preset matches its own model; `--model` another is checked like any local folder (it
    used to pass the door and fail every item after a minute, the message repeated)."""
    from tests.standin_models import write_model_folder

    model = write_model_folder(tmp_path / "llama", "llama", tiny_tokenizer_dir, seed=1)
    arguments = ["--preset", "toy-clt", "--model", str(model), "--prompt", "x"]
    result, _ = run_cli(arguments, tmp_path / "home")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: transcoder 'toy-clt' has 3 layers of d_model 64, but model '{model}' has 2 "
        "layers of d_model 64; give --model the model it was trained on"
    ]
    assert_nothing_started(tmp_path / "home")


def test_a_local_transcoder_runs_on_the_model_named_or_the_one_its_config_names(
    tmp_path: Path,
) -> None:
    """No --model: a local folder whose files name no model is refused at the door (before, it
    ran on GPT-2: every item failed, or a GPT-2-shaped one scored on the wrong model); one whose
    circuit-tracer config names its model runs on that model."""
    from tests.transcoders.foreign_formats import circuit_tracer_config
    from tests.transcoders.foreign_formats import circuit_tracer_folder as written_by_circuit_tracer
    from tracerflow import toy
    from tracerflow.flows.validation import model_for_source

    plain = tmp_path / "my-clt"
    shutil.copytree(toy.transcoder_dir("clt"), plain)
    result, _ = run_cli(["--transcoder", str(plain), "--prompt", "x"], tmp_path / "home")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: transcoder '{plain}' names no model (a local folder's files do not say which "
        "model it was trained on): give --model"
    ]
    assert_nothing_started(tmp_path / "home")

    named = written_by_circuit_tracer(
        toy.transcoder_dir("plt"),
        tmp_path / "named",
        circuit_tracer_config("plt", activation="relu", model_name="toy-gpt2"),
    )
    validate_run_request(run_request(transcoders=[str(named)], prompts=["When Mary and"]))
    assert model_for_source(str(named), None) == "toy-gpt2"
    assert model_for_source(str(named), "gpt2") == "gpt2"  # --model wins
