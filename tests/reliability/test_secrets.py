"""A lake's password never reaches a log line, an error or a repr: every way a store is
printed masks it, in key/value and URI conninfos alike (a password may hold '@' or spaces)."""

from __future__ import annotations

import logging
import traceback

import pytest

from tracerflow.errors import StorageError
from tracerflow.storage.database import reading, record_run
from tracerflow.storage.records import RunInfo
from tracerflow.storage.store import LakeStore, mask_conninfo, parse_store

CONNINFOS = {
    "key/value": ("dbname=lake host=127.0.0.1 port=1 user=u password=s3cret", "s3cret"),
    "quoted with a space": ("dbname=lake port=1 password='s3 cret\\'x' user=u", "s3 cret'x"),
    "URI": ("postgresql://u:s3cret@127.0.0.1:1/lake", "s3cret"),
    "URI, '@' in the password": ("postgresql://u:p@ss@w0rd@127.0.0.1:1/lake", "p@ss@w0rd"),
}


@pytest.mark.parametrize("case", list(CONNINFOS))
def test_every_way_a_lake_is_printed_masks_its_password(case: str) -> None:
    conninfo, password = CONNINFOS[case]
    store = parse_store(f"ducklake:postgres:{conninfo}")
    assert isinstance(store, LakeStore)

    for text in (repr(store), str(store), store.describe(), f"{store}", mask_conninfo(conninfo)):
        assert password not in text and "***" in text, text
    driver_message = f'could not connect: connection to "{conninfo}" with password {password}'
    assert password not in store.mask(driver_message)
    logging.getLogger("t").warning("recorded in %s", store)  # what a log line formats


def test_a_lake_that_cannot_be_reached_never_shows_its_password(caplog) -> None:
    store = parse_store("ducklake:postgres:dbname=x host=127.0.0.1 port=1 user=u password=s3cret")
    run = RunInfo(
        flow_run_id="r", flow_name="f", deployment_name=None, suite_name=None,
        started_at=None, finished_at=None, status="completed", tracerflow_version="0",
        circuit_tracer_version="0", torch_version="0", device="cpu", host="h",
    )  # fmt: skip
    for attempt in (lambda: record_run(store, run, []), lambda: reading(store).__enter__()):
        with pytest.raises(StorageError) as raised:
            attempt()
        # What a log shows of it: the message and every exception it chains.
        printed = "".join(traceback.format_exception(raised.value))
        assert "s3cret" not in printed and "password=***" in printed, printed
    assert "s3cret" not in caplog.text


def test_a_file_store_prints_as_its_path(tmp_path) -> None:
    # Log lines said "FileStore(path=PosixPath('…'))": a store is printed as a user names it.
    from tracerflow.storage.store import FileStore

    store = FileStore(tmp_path / "scores.duckdb")
    assert f"recorded in {store}" == f"recorded in {tmp_path / 'scores.duckdb'}"
