"""The command line: help on every command, bad input refused before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.cli import build_parser, main


@pytest.mark.parametrize("command", ["ingest", "convert", "detect", "track", "run", "serve", "demo"])
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




def test_missing_out_is_a_usage_error():
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["convert", "somewhere"])
    assert info.value.code == 2


@pytest.mark.parametrize("command, recipe, message", [
    ("convert", "convert:\n  crf: 500\n", "convert.crf: must be at most 63"),
    ("track", "detect: {backend: nope}\n", "detect.backend 'nope': unknown detector"),
    ("track", "track: {tracker: csrt, options: {bogus: 1}}\n", "track.options of tracker 'csrt': unknown option 'bogus'"),
    ("track", "labels: {map: {person: x}, file: missing.yaml}\n", "cannot read labels file"),
    ("detect", "detect: {backend: hog, options: {bogus: 1, scale: 1.1, other: 2}}\n",
     "bad.yaml: detect.options of backend 'hog': unknown options 'bogus', 'other'; known: "
     "win_stride, scale, min_score"),
])
def test_bad_recipe_exits_2_before_work(tmp_path, dataset, capsys, command, recipe, message):
    config = tmp_path / "bad.yaml"
    config.write_text(recipe)
    code = main([command, str(dataset), "--out", str(tmp_path / "out"), "--config", str(config)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_input_folder_is_one_line_and_exit_2(tmp_path):
    """A mistyped dataset is a bad argument: refused before Prefect starts (no retries, no
    traceback), and nothing is written."""
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(tmp_path / "tpyo"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"preannotate: {tmp_path / 'tpyo'}: no such folder or prefix"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("db, message", [
    ("sqlite:///missing-dir/review.db", "unable to open database file"),
    ("postgresql://nobody@127.0.0.1:9/nothing", "cannot open the review queue"),
])
def test_a_review_queue_that_cannot_work_is_refused_before_work(tmp_path, dataset, capsys, db,
                                                                message):
    config = tmp_path / "queue.yaml"
    config.write_text(f"review: {{db: '{db}'}}\n")
    code = main(["run", str(dataset), "--out", str(tmp_path / "out"), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and "review.db" in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_bad_keyframes_file_exits_2(tmp_path, dataset, capsys):
    keyframes = tmp_path / "kf.csv"
    keyframes.write_text("recording,frame\ncam,1\n")
    code = main(["track", str(dataset), "--out", str(tmp_path / "out"), "--keyframes", str(keyframes)])
    assert code == 2
    assert "missing column(s) clip_index, track_id" in capsys.readouterr().err


def test_run_does_every_stage_and_reports_blocked_clips(prefect_harness, tmp_path, dataset, capsys):
    """`preannotate run`: one command from clips to exports and review tasks; a broken clip
    is blocked and reported (exit 3), the others go through every stage."""
    import pyarrow.parquet as pq

    from tasks.review import ReviewQueue

    (dataset / "cam" / "3.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    config = tmp_path / "fast.yaml"
    config.write_text("detect: {every_nth: 4}\ntrack: {tracker: null}\n"
                      "export: {formats: [json, cvat]}\n")
    out = tmp_path / "out"
    code = main(["run", str(dataset), "--out", str(out), "--config", str(config)])
    printed = capsys.readouterr().out
    assert code == 3, printed
    assert "1 blocked" in printed and f"outputs: {out}" in printed and "review queue: sqlite:///" in printed
    items = pq.read_table(out / "items.parquet").to_pylist()
    assert sorted(i["status"] for i in items) == ["blocked", "converted", "converted"]
    assert (out / "keyframes.parquet").exists()
    assert sorted(p.name for p in (out / "exports" / "json" / "cam").iterdir()) == ["10.json", "2.json"]
    with ReviewQueue(f"sqlite:///{out / 'review.db'}") as queue:
        # 3.mp4 is clip 1 (natural order) and blocked: no task for it.
        assert sorted(t.key for t in queue.list()) == ["clip:cam:0", "clip:cam:2"]


def test_scheduled_deployment_and_prefect_yaml_agree(tmp_path):
    """`preannotate serve` and prefect.yaml describe the same flow, parameters and schedule;
    a bad cron or recipe fails before anything is served."""
    import pathlib

    import yaml
    from prefect.utilities.importtools import import_object

    from flows.serve import deployment
    from tasks.errors import ConfigError

    made = deployment("s3://b/videos", "s3://b/out", None, "0 2 * * *")
    assert made.entrypoint == "flows/run.py:run_flow"
    assert made.parameters == {"uri": "s3://b/videos", "out": "s3://b/out", "config": None}
    assert made.schedules[0].schedule.cron == "0 2 * * *"
    with pytest.raises(ConfigError, match="cron"):
        deployment("s3://b/videos", "s3://b/out", None, "every night")
    bad = tmp_path / "bad.yaml"
    bad.write_text("convert: {crf: 500}\n")
    with pytest.raises(ConfigError, match="crf"):
        deployment("s3://b/videos", "s3://b/out", str(bad), "0 2 * * *")

    root = pathlib.Path(__file__).resolve().parents[2]
    declared = yaml.safe_load((root / "prefect.yaml").read_text())
    (spec,) = declared["deployments"]
    assert spec["entrypoint"] == made.entrypoint and spec["schedules"][0]["cron"] == "0 2 * * *"
    path, name = spec["entrypoint"].split(":")
    flow = import_object(f"{root / path}:{name}")
    assert set(spec["parameters"]) <= set(flow.parameters.properties)
    assert declared["prefect-version"] == __import__("prefect").__version__
