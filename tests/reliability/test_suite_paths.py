"""A suite file reads prompts only from its own folder: `prompts_file: /etc/shadow` or a `../`
escape is refused with the file, the line and the field, unless the person running tracerflow
sets TRACERFLOW_ALLOW_OUTSIDE_PATHS=1. A relative prompts file in the folder still works.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tracerflow.errors import ConfigError
from tracerflow.suites import load_suite

PROMPTS = "When Mary and John went to the store, John gave a drink to\n"


@pytest.fixture(autouse=True)
def no_outside_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACERFLOW_ALLOW_OUTSIDE_PATHS", raising=False)


def write_suite(folder: Path, prompts_file: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "suite.yaml"
    path.write_text(f"name: n\ntranscoders: [toy-clt]\nprompts_file: {prompts_file}\n")
    return path


def test_an_absolute_prompts_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:$6$hash:19000:0:99999:7:::\n")
    path = write_suite(tmp_path / "suites", str(secret))
    with pytest.raises(ConfigError, match=r"suite\.yaml:3: field 'prompts_file': .*absolute"):
        load_suite(path)


def test_etc_shadow_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "/etc/shadow")
    with pytest.raises(ConfigError, match=r"suite\.yaml:3: field 'prompts_file': /etc/shadow"):
        load_suite(path)


def test_a_dotdot_escape_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text(PROMPTS)
    path = write_suite(tmp_path / "suites", "../outside.txt")
    with pytest.raises(ConfigError, match=r"suite\.yaml:3: field 'prompts_file': .*outside"):
        load_suite(path)


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text(PROMPTS)
    folder = tmp_path / "suites"
    path = write_suite(folder, "prompts.txt")
    (folder / "prompts.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(ConfigError, match=r"field 'prompts_file': .*outside the suite"):
        load_suite(path)


def test_a_relative_prompts_file_in_the_folder_works(tmp_path: Path) -> None:
    folder = tmp_path / "suites"
    (folder / "prompts").mkdir(parents=True)
    (folder / "prompts" / "ioi.txt").write_text(PROMPTS)
    path = write_suite(folder, "prompts/ioi.txt")
    assert load_suite(path).prompts == [PROMPTS.strip()]


def test_the_runner_may_allow_outside_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "outside.txt").write_text(PROMPTS)
    path = write_suite(tmp_path / "suites", "../outside.txt")
    monkeypatch.setenv("TRACERFLOW_ALLOW_OUTSIDE_PATHS", "1")
    assert load_suite(path).prompts == [PROMPTS.strip()]
    monkeypatch.delenv("TRACERFLOW_ALLOW_OUTSIDE_PATHS")
    assert load_suite(path, allow_outside_paths=True).prompts == [PROMPTS.strip()]


def test_a_suite_file_cannot_allow_itself(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text(PROMPTS)
    path = tmp_path / "suites" / "suite.yaml"
    path.parent.mkdir()
    path.write_text(
        "name: n\ntranscoders: [toy-clt]\nprompts_file: ../outside.txt\nallow_outside_paths: true\n"
    )
    with pytest.raises(ConfigError, match=r"suite\.yaml:4: field 'allow_outside_paths'"):
        load_suite(path)
