import re

import pytest

from configs import CONFIG_DIR
from tasks.errors import ConfigError
from tasks.recipe import load_recipe, parse_recipe


def test_bundled_recipes_load():
    for path in CONFIG_DIR.glob("*.yaml"):
        recipe = load_recipe(path)
        assert recipe.version == 1
    assert load_recipe().convert.codec == "vp9"


def test_recipe_is_frozen():
    recipe = load_recipe()
    with pytest.raises(Exception):
        recipe.convert.crf = 10  # type: ignore[misc]


def _error(tmp_path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_unknown_key_names_path_and_allowed(tmp_path):
    message = _error(tmp_path, "convert:\n  crff: 3\n")
    assert "convert.crff: unknown key" in message
    assert "crf" in message and "codec" in message


def test_wrong_type(tmp_path):
    message = _error(tmp_path, "convert:\n  crf: '30'\n")
    assert "convert.crf" in message and "integer" in message


def test_out_of_range(tmp_path):
    assert "convert.crf: must be at most 63 (got 99)" in _error(tmp_path, "convert: {crf: 99}\n")
    assert "run.max_parallel_clips: must be at least 1" in _error(tmp_path, "run: {max_parallel_clips: 0}\n")


def test_bad_choice(tmp_path):
    message = _error(tmp_path, "convert: {codec: h264}\n")
    assert "convert.codec" in message and "'vp9' or 'vp8'" in message


def test_not_yaml_and_not_mapping(tmp_path):
    assert "not valid YAML at line 3" in _error(tmp_path, "convert:\n  crf: [1,\n")
    assert "a recipe is a mapping" in _error(tmp_path, "- 1\n- 2\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_recipe(tmp_path / "nope.yaml")


def test_secret_is_never_echoed():
    with pytest.raises(ConfigError) as info:
        parse_recipe({"storage": {"secret": 12345678}}, "r.yaml")
    assert "12345678" not in str(info.value)
    recipe = parse_recipe({"storage": {"key": "AKIAEXAMPLE", "secret": "s3cr3t-value"}})
    assert "s3cr3t-value" not in repr(recipe)


def test_convert_key_follows_settings():
    a = parse_recipe({})
    b = parse_recipe({"convert": {"crf": 20}})
    c = parse_recipe({"run": {"max_parallel_clips": 7}})
    assert a.convert_key() != b.convert_key()
    assert a.convert_key() == c.convert_key()  # parallelism does not change outputs



def test_a_new_model_file_at_the_same_path_changes_the_detect_key(tmp_path):
    import os

    from tasks.recipe import parse_recipe

    model = tmp_path / "m.onnx"
    model.write_bytes(b"one")
    recipe = parse_recipe({"detect": {"backend": "onnx", "options": {"model_path": str(model)}}})
    first = recipe.detect_key()
    assert recipe.detect_key() == first
    model.write_bytes(b"two")
    os.utime(model, ns=(1, 1))  # a new mtime, as a copy would give
    assert recipe.detect_key() != first


def test_a_relative_sqlite_queue_is_relative_to_the_recipe_file(tmp_path):
    from tasks.recipe import load_recipe

    (tmp_path / "recipes").mkdir()
    config = tmp_path / "recipes" / "r.yaml"
    config.write_text("review: {db: 'sqlite:///queues/review.db'}\n")
    assert load_recipe(config).review.db == f"sqlite:///{tmp_path}/recipes/queues/review.db"
    config.write_text("review: {db: 'sqlite:////srv/review.db'}\n")  # absolute: as written
    assert load_recipe(config).review.db == "sqlite:////srv/review.db"


@pytest.mark.parametrize("text, message", [
    ("convert:\n  crf: 30\nconvert:\n  crf: 20\n",
     "not valid YAML at line 3, column 1: key 'convert' given twice (first at line 1)"),
    ("detect: {every_nth: 2, every_nth: 3}\n",
     "not valid YAML at line 1, column 24: key 'every_nth' given twice (first at line 1)"),
])
def test_a_key_given_twice_is_refused(tmp_path, text, message):
    config = tmp_path / "dup.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{config}: {message}")):
        load_recipe(config)


def test_a_key_given_twice_in_a_labels_file_is_refused(tmp_path):
    from tasks.labels import load_label_tree

    labels = tmp_path / "labels.yaml"
    labels.write_text("Task 1:\n  - a\nTask 1:\n  - b\n")
    with pytest.raises(ConfigError, match="key 'Task 1' given twice"):
        load_label_tree(labels)


def test_huge_recipes_are_refused_quickly(tmp_path):
    from tasks.recipe import MAX_LABEL_MAP, MAX_RECIPE_BYTES

    config = tmp_path / "huge.yaml"
    config.write_text("labels:\n  map:\n" + "".join(f"    l{i}: person\n" for i in range(400_000)))
    assert config.stat().st_size > MAX_RECIPE_BYTES
    with pytest.raises(ConfigError, match=r"a recipe of [\d,]+ bytes; at most 1,048,576"):
        load_recipe(config)
    with pytest.raises(ConfigError, match=f"labels.map: Dictionary should have at most {MAX_LABEL_MAP}"):
        parse_recipe({"labels": {"map": {f"l{i}": "person" for i in range(MAX_LABEL_MAP + 1)}}})
