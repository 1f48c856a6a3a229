"""The command line: help on every command, bad input refused before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.cli import build_parser, main


@pytest.mark.parametrize("command", ["ingest", "convert", "detect", "track", "demo"])
def test_help_explains_each_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "--config" in text


def test_console_script_help():
    done = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert "ingest" in done.stdout and "convert" in done.stdout


def test_bad_recipe_exits_2_before_work(tmp_path, dataset, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("convert:\n  crf: 500\n")
    code = main(["convert", str(dataset), "--out", str(tmp_path / "out"), "--config", str(bad)])
    assert code == 2
    assert "convert.crf: must be at most 63" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_out_is_a_usage_error():
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["convert", "somewhere"])
    assert info.value.code == 2
