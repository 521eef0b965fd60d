"""crosslayer-transcoder's Lightning ``clt.ckpt``: read with torch's weights-only loader only,
converted bit for bit as the equivalent ``save_pretrained`` folder, and a checkpoint that needs
any other class refused in one line, at the door and in the reader, without importing it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.transcoders.foreign_formats import (
    UPSTREAM,
    UPSTREAM_NAMES,
    TrainingNotes,
    lightning_checkpoint,
)
from tracerflow.cli import app
from tracerflow.errors import CheckpointError
from tracerflow.transcoders import convert, read_manifest
from tracerflow.transcoders.formats import (
    check_source_folder,
    checkpoint_files,
    describe_folder,
    detect_format,
    read_source,
    source_format,
)

REPO = Path(__file__).resolve().parents[2]
REFUSED = "which torch's weights-only loader refuses"
EXPORT = "export the transcoder with crosslayer-transcoder's save_pretrained"


def assert_converted_alike(
    checkpoint_out: Path, folder_out: Path, also_differing: frozenset[str] = frozenset()
) -> None:
    """The same circuit-tracer files, tensor for tensor and byte for byte, and the same manifest
    but for the source files it names (and ``also_differing``)."""
    names = sorted(path.name for path in folder_out.glob("*.safetensors"))
    assert sorted(path.name for path in checkpoint_out.glob("*.safetensors")) == names
    for name in names:
        ours, theirs = load_file(checkpoint_out / name), load_file(folder_out / name)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[key], theirs[key]) for key in ours), name
        assert (checkpoint_out / name).read_bytes() == (folder_out / name).read_bytes()
    differing = {"source_files_sha256", "content_hash", *also_differing}
    assert read_manifest(checkpoint_out).model_dump(exclude=differing) == read_manifest(
        folder_out
    ).model_dump(exclude=differing)


@pytest.mark.parametrize("name", UPSTREAM_NAMES)
def test_a_checkpoint_converts_bit_for_bit_as_its_save_pretrained_folder(
    tmp_path: Path, name: str
) -> None:
    checkpoint = lightning_checkpoint(UPSTREAM / name, tmp_path / "ckpt")
    assert detect_format(checkpoint).name == "crosslayer-transcoder-lightning"
    assert source_format(checkpoint).name == "crosslayer-transcoder-lightning"
    check_source_folder(checkpoint, "ckpt")
    assert checkpoint_files(checkpoint) == ("clt.ckpt",)
    assert_converted_alike(
        convert(checkpoint, tmp_path / "from-ckpt"), convert(UPSTREAM / name, tmp_path / "folder")
    )


def test_the_training_runs_config_yaml_describes_a_checkpoint_whose_module_left_it_out(
    tmp_path: Path,
) -> None:
    """The library's module saves its hyper_parameters without ``model``; its LightningCLI
    config beside the file (the transcoder under the module's ``init_args.model``) tells."""
    name = "a_clt_topk_folded"
    checkpoint = lightning_checkpoint(
        UPSTREAM / name, tmp_path / "ckpt", config_in_hyper_parameters=False
    )
    check_source_folder(checkpoint, "ckpt")
    assert checkpoint_files(checkpoint) == ("clt.ckpt", "config.yaml")
    fields = describe_folder(checkpoint)
    assert fields["format"] == "crosslayer-transcoder Lightning checkpoint"
    assert (fields["config"], fields["global_step"], fields["activation"], fields["k"]) == (
        "config.yaml",
        93_000,
        "topk",
        4,
    )
    # A training config has no is_folded (training never folds); with no standardizers to fold
    # the files are the same either way.
    assert_converted_alike(
        convert(checkpoint, tmp_path / "from-ckpt"),
        convert(UPSTREAM / name, tmp_path / "folder"),
        also_differing=frozenset({"source_was_folded"}),
    )


def test_a_checkpoint_without_a_transcoder_config_says_what_to_add(tmp_path: Path) -> None:
    checkpoint = lightning_checkpoint(
        UPSTREAM / "c_plt_topk_folded", tmp_path / "ckpt", config_in_hyper_parameters=False
    )
    (checkpoint / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match=r"put the training run's config\.yaml"):
        read_source(checkpoint)


def test_a_checkpoint_that_needs_a_class_is_refused_at_the_door_and_by_the_reader(
    tmp_path: Path,
) -> None:
    checkpoint = lightning_checkpoint(
        UPSTREAM / "a_clt_topk_folded",
        tmp_path / "ckpt",
        extra_hyper_parameters={"notes": TrainingNotes()},
    )
    name = f"{TrainingNotes.__module__}.TrainingNotes"
    for refuse in (
        lambda: check_source_folder(checkpoint, "ckpt"),
        lambda: read_source(checkpoint),
    ):
        with pytest.raises(CheckpointError) as raised:
            refuse()
        message = str(raised.value)
        assert message.startswith(f"{checkpoint / 'clt.ckpt'}: needs {name}, {REFUSED}")
        assert EXPORT in message and len(message.splitlines()) == 1


def test_a_file_that_is_no_torch_archive_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "clt.ckpt").write_bytes(b"\x80\x02}q\x00.")  # a bare pickle, not torch's zip
    with pytest.raises(CheckpointError, match=r"clt\.ckpt: not a torch checkpoint archive"):
        check_source_folder(folder, "ckpt")
    with zipfile.ZipFile(folder / "clt.ckpt", "w") as archive:
        archive.writestr("clt/data.pkl", b"\x80\x02no pickle at all")
    with pytest.raises(CheckpointError, match=r"clt\.ckpt: its pickled data cannot be read"):
        check_source_folder(folder, "ckpt")


def test_convert_refuses_without_importing_the_class_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tracerflow convert`` as a user runs it, on a checkpoint whose hyper_parameters hold an
    object of a module that announces its import: one line, exit 2, and the module never ran."""
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "planted_notes.py").write_text(
        textwrap.dedent(
            """
            import os
            from dataclasses import dataclass
            from pathlib import Path

            Path(os.environ["PLANTED_MARKER"]).write_text("imported")

            @dataclass
            class Notes:
                text: str = "trained on a Tuesday"
            """
        )
    )
    monkeypatch.syspath_prepend(str(planted))
    monkeypatch.setenv("PLANTED_MARKER", str(tmp_path / "imported-when-saved"))
    notes = importlib.import_module("planted_notes").Notes()
    saved = lightning_checkpoint(
        UPSTREAM / "a_clt_topk_folded", tmp_path / "ckpt", extra_hyper_parameters={"notes": notes}
    )
    sys.modules.pop("planted_notes")
    marker = tmp_path / "imported-when-converted"
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{planted}",
        "PLANTED_MARKER": str(marker),
    }
    result = subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", "convert", str(saved), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f"needs planted_notes.Notes, {REFUSED}" in lines[0] and EXPORT in lines[0]
    assert not marker.exists(), "the checkpoint's class was imported"
    assert not (tmp_path / "out").exists()


def test_inspect_names_the_format(tmp_path: Path) -> None:
    checkpoint = lightning_checkpoint(UPSTREAM / "d_clt_jumprelu_folded", tmp_path / "ckpt")
    result = CliRunner().invoke(app, ["inspect", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert "crosslayer-transcoder Lightning checkpoint" in result.output
    assert "hyper_parameters" in result.output and "jump_relu" in result.output
