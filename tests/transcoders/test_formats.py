"""The format registry: which format a folder is, read from the folder as the outside world wrote
it (the upstream library's own checkpoints), and one clear error for a folder of no known format.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.transcoders.foreign_formats import (
    circuit_tracer_config,
    circuit_tracer_folder,
    lightning_checkpoint,
)
from tracerflow.cli import app
from tracerflow.errors import CheckpointError
from tracerflow.transcoders import convert
from tracerflow.transcoders.formats import (
    check_source_folder,
    checkpoint_files,
    describe_folder,
    detect_format,
    download_pattern_groups,
    folder_format,
    source_format,
)

UPSTREAM = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "upstream-checkpoints"
UPSTREAM_FOLDERS = sorted(path for path in UPSTREAM.iterdir() if path.is_dir())
KNOWN = "the formats tracerflow reads: "


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(UPSTREAM / "a_clt_topk_folded", tmp_path_factory.mktemp("converted") / "out")


def test_the_upstream_fixtures_are_there() -> None:
    assert len(UPSTREAM_FOLDERS) >= 3, f"expected the upstream fixtures in {UPSTREAM}"


@pytest.mark.parametrize("folder", UPSTREAM_FOLDERS, ids=lambda path: path.name)
def test_each_upstream_checkpoint_is_a_crosslayer_transcoder_checkpoint(folder: Path) -> None:
    assert detect_format(folder).name == "crosslayer-transcoder"
    assert source_format(folder).name == "crosslayer-transcoder"
    check_source_folder(folder, folder.name)  # the run's door checks pass
    assert checkpoint_files(folder) == ("config.yaml", "checkpoint.safetensors")
    fields = describe_folder(folder)
    assert fields["format"] == "crosslayer-transcoder checkpoint"
    assert (fields["n_layers"], fields["d_model"], fields["d_features"]) == (3, 16, 32)
    assert fields["folded"] is True


def test_a_converted_folder_is_a_circuit_tracer_folder_a_run_starts_from(
    converted: Path,
) -> None:
    """What ``convert`` writes is circuit-tracer's files: inspect names it so, and a run reads it
    as a source (its identity: the files it holds, the manifest among them)."""
    assert detect_format(converted).name == "circuit-tracer"
    assert source_format(converted).name == "circuit-tracer"
    fields = describe_folder(converted)
    assert fields["format"] == "circuit-tracer transcoder folder (converted by tracerflow)"
    assert fields["kind"] == "clt" and fields["files"] == 6
    assert (fields["activation"], fields["k"], fields["source_activation"]) == (
        "topk",
        4,
        "PerLayerTopK",
    )
    assert checkpoint_files(converted) == (
        *(f"W_{part}_{layer}.safetensors" for layer in range(3) for part in ("enc", "dec")),
        "tracerflow.json",
    )
    check_source_folder(converted, "my-out")


def test_a_manifest_decides_for_inspect_and_checkpoint_files_for_a_run(
    converted: Path, tmp_path: Path
) -> None:
    """A folder holding both: inspect reads it as converted (as before the registry), a run as
    the checkpoint it also holds."""
    both = shutil.copytree(converted, tmp_path / "both")
    for name in ("config.yaml", "checkpoint.safetensors"):
        shutil.copy(UPSTREAM / "c_plt_topk_folded" / name, both / name)
    assert folder_format(both).name == "circuit-tracer"
    assert source_format(both).name == "crosslayer-transcoder"
    assert describe_folder(both)["kind"] == "clt"  # the manifest's, not the checkpoint's plt


def test_an_unknown_folder_names_the_folder_and_the_formats(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no transcoder here")
    assert detect_format(tmp_path) is None
    assert checkpoint_files(tmp_path) == ()
    with pytest.raises(CheckpointError) as raised:
        folder_format(tmp_path)
    assert str(raised.value) == (
        f"'{tmp_path}' is not a transcoder checkpoint folder: no layer_*.safetensors or "
        "W_enc_*.safetensors or W_dec_*.safetensors or config.yaml or tracerflow.json or "
        "checkpoint.safetensors or clt.ckpt or layer_*/**/params.npz "
        f"({KNOWN}circuit-tracer transcoder folder, crosslayer-transcoder checkpoint, "
        "crosslayer-transcoder Lightning checkpoint, circuit-tracer Hub config, "
        "GemmaScope params.npz transcoders)"
    )
    with pytest.raises(CheckpointError) as raised:
        source_format(tmp_path, "my-clt")
    assert str(raised.value) == (
        "'my-clt' is not a transcoder checkpoint folder: no config.yaml or checkpoint.safetensors "
        "or clt.ckpt or layer_*.safetensors or W_enc_*.safetensors or W_dec_*.safetensors or "
        f"tracerflow.json or layer_*/**/params.npz ({KNOWN}crosslayer-transcoder checkpoint, "
        "crosslayer-transcoder Lightning checkpoint, circuit-tracer Hub config, circuit-tracer "
        "transcoder folder, GemmaScope params.npz transcoders)"
    )


def test_convert_and_inspect_refuse_an_unknown_folder_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    for command in (["convert", str(tmp_path), str(tmp_path / "out")], ["inspect", str(tmp_path)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and f"'{tmp_path}' is not a transcoder checkpoint folder" in lines[0]
        assert KNOWN in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint folder does not exist"):
        folder_format(tmp_path / "missing")


def test_a_half_checkpoint_is_read_as_its_format_and_the_missing_file_named(
    tmp_path: Path,
) -> None:
    shutil.copy(UPSTREAM / "a_clt_topk_folded" / "checkpoint.safetensors", tmp_path)
    assert source_format(tmp_path).name == "crosslayer-transcoder"
    with pytest.raises(CheckpointError) as raised:
        check_source_folder(tmp_path, "half")
    assert str(raised.value) == "'half' is not a transcoder checkpoint folder: no config.yaml"


def test_the_door_checks_read_the_config_and_the_header(tmp_path: Path) -> None:
    folder = shutil.copytree(UPSTREAM / "a_clt_topk_folded", tmp_path / "ckpt")
    (folder / "checkpoint.safetensors").write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(
        CheckpointError, match=r"checkpoint\.safetensors: not a readable safetensors file"
    ):
        check_source_folder(folder, "ckpt")
    (folder / "config.yaml").write_text("trainer: {}\n")
    with pytest.raises(CheckpointError, match="no 'model:' key at the top level"):
        check_source_folder(folder, "ckpt")


def test_a_hub_download_asks_for_one_formats_files_at_a_time_the_checkpoint_first() -> None:
    """GemmaScope's npz files are never fetched by pattern: a config picks among them."""
    assert [(found.name, patterns) for found, patterns in download_pattern_groups()] == [
        ("crosslayer-transcoder", ["config.yaml", "checkpoint.safetensors"]),
        ("crosslayer-transcoder-lightning", ["clt.ckpt", "config.yaml"]),
        ("circuit-tracer-hub-config", ["config.yaml"]),
        (
            "circuit-tracer",
            [
                "layer_*.safetensors",
                "W_enc_*.safetensors",
                "W_dec_*.safetensors",
                "config.yaml",
                "tracerflow.json",
            ],
        ),
    ]


def test_detecting_and_checking_never_imports_torch(converted: Path, tmp_path: Path) -> None:
    """The CLI detects and checks folders, and reads their shape for the model's, before it
    starts anything: without torch (seconds), in every format."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from tracerflow.transcoders import formats\n"
        "names = {}\n"
        "for folder in map(Path, sys.argv[1:]):\n"
        "    names[folder.name] = formats.detect_format(folder).name\n"
        "    if formats.checkpoint_files(folder):\n"
        "        formats.check_source_folder(folder, str(folder))\n"
        "        formats.source_format(folder).dimensions(folder)\n"
        "formats.download_pattern_groups()\n"
        "print(json.dumps({'names': names, 'torch': 'torch' in sys.modules}))\n"
    )
    circuit_tracer = circuit_tracer_folder(
        UPSTREAM / "c_plt_topk_folded",
        tmp_path / "circuit-tracer",
        circuit_tracer_config("plt", activation="topk", k=4),
    )
    lightning = lightning_checkpoint(
        UPSTREAM / "a_clt_topk_folded", tmp_path / "lightning", config_in_hyper_parameters=False
    )
    folders = [*UPSTREAM_FOLDERS, converted, circuit_tracer, lightning]
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, folders)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["names"] == {
        **{folder.name: "crosslayer-transcoder" for folder in UPSTREAM_FOLDERS},
        converted.name: "circuit-tracer",
        circuit_tracer.name: "circuit-tracer",
        lightning.name: "crosslayer-transcoder-lightning",
    }
    assert answer["torch"] is False
