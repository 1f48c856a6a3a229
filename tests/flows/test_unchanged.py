"""`run` with nothing to do answers from the last run's kept summary, without a flow run;
anything that changed (an output, the recipe, the dataset, the kept file) runs the flow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from configs import recipe_path
from tests.scene import render_scene


def _recipe(root: Path, every_nth: int) -> Path:
    recipe = yaml.safe_load(recipe_path("moving-objects").read_text())
    recipe["export"] = {"formats": ["json", "cvat"]}
    recipe.setdefault("detect", {})["every_nth"] = every_nth
    path = root / f"recipe-{every_nth}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def scene(tmp_path) -> Path:
    cam = tmp_path / "data" / "cam"
    cam.mkdir(parents=True)
    render_scene(cam / "1.mp4", frames=40)
    return tmp_path


def test_nothing_changed_needs_no_flow_run_and_any_change_runs_it(prefect_harness, scene):
    from flows.run import run_pipeline
    from flows.unchanged import UNCHANGED_FILE

    data, out, config = str(scene / "data"), str(scene / "out"), str(_recipe(scene, 2))
    first = run_pipeline(data, out, config)
    assert "unchanged_since" not in first and first["state"] == "COMPLETED"
    assert (scene / "out" / Path(*UNCHANGED_FILE)).exists()

    again = run_pipeline(data, out, config)
    assert again["unchanged_since"] and again["outcomes"] == first["outcomes"]
    assert again["clips"] == first["clips"]

    # An output deleted: the flow runs and makes it again.
    (exported,) = (scene / "out" / "exports" / "cvat").rglob("*.xml")
    before = exported.read_bytes()
    exported.unlink()
    redone = run_pipeline(data, out, config)
    assert "unchanged_since" not in redone and exported.read_bytes() == before
    assert run_pipeline(data, out, config)["unchanged_since"]

    # Another recipe setting: the flow runs.
    other = str(_recipe(scene, 3))
    assert "unchanged_since" not in run_pipeline(data, out, other)
    assert run_pipeline(data, out, other)["unchanged_since"]

    # A new clip in the dataset: the flow runs and converts it.
    shutil.copy(scene / "data" / "cam" / "1.mp4", scene / "data" / "cam" / "2.mp4")
    grown = run_pipeline(data, out, other)
    assert "unchanged_since" not in grown and grown["outcomes"]["done"] == 2

    # A kept summary that cannot be read is no answer: the flow runs.
    (scene / "out" / Path(*UNCHANGED_FILE)).write_text("{not json")
    assert "unchanged_since" not in run_pipeline(data, out, other)


def test_a_run_that_failed_keeps_no_summary(prefect_harness, scene, monkeypatch):
    from flows.run import run_pipeline
    from flows.unchanged import UNCHANGED_FILE
    import tasks.export.stage

    def broken(*args, **kwargs):
        raise RuntimeError("export broke")

    monkeypatch.setattr(tasks.export.stage, "export_clip", broken)
    data, out, config = str(scene / "data"), str(scene / "out"), str(_recipe(scene, 2))
    failed = run_pipeline(data, out, config)
    assert failed["state"] == "FAILED"
    assert not (scene / "out" / Path(*UNCHANGED_FILE)).exists()
    monkeypatch.undo()
    assert "unchanged_since" not in run_pipeline(data, out, config)  # the export is redone
