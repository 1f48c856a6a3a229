import pytest

from tasks.errors import ConfigError
from tasks.labels import LabelMapper, LabelTree, load_label_tree
from tasks.recipe import load_recipe


def test_tree_file_lists_every_node(tmp_path):
    path = tmp_path / "labels.yaml"
    path.write_text("Task 1:\n  Sub Task 1.1: null\n  Sub Task 1.2: null\npeople: [pedestrian, cyclist]\n")
    tree = load_label_tree(path)
    assert tree.paths == ("Task 1", "Task 1/Sub Task 1.1", "Task 1/Sub Task 1.2", "people",
                          "people/pedestrian", "people/cyclist")
    assert "Task 1/Sub Task 1.2" in tree and "Task 2" not in tree
    assert tree.leaves() == ("Task 1/Sub Task 1.1", "Task 1/Sub Task 1.2", "people/pedestrian",
                             "people/cyclist")
    assert LabelTree.parent("Task 1/Sub Task 1.2") == "Task 1"


def test_text_file_of_paths_declares_parents(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("Task 1/Sub Task 1.2\n\ncar\n")
    assert load_label_tree(path).paths == ("Task 1", "Task 1/Sub Task 1.2", "car")


@pytest.mark.parametrize("text, message", [
    ("", "holds no labels"),
    ("a: 3\n", "expected a mapping or list"),
    ("- 'a//b'\n", "empty part"),
    ("{a: [", "not valid YAML"),
])
def test_bad_labels_files(tmp_path, text, message):
    path = tmp_path / "labels.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_label_tree(path)


def test_mapper_drops_unmapped_and_checks_targets(tmp_path):
    tree = LabelTree(("people", "people/pedestrian"))
    mapper = LabelMapper({"person": "people/pedestrian"}, tree)
    assert mapper.table(("person", "car")) == ["people/pedestrian", None]
    assert LabelMapper({}).table(("person",)) == ["person"]  # no mapping keeps all
    with pytest.raises(ConfigError, match="'people/cyclist' not in the labels file"):
        LabelMapper({"person": "people/cyclist"}, tree)


def test_recipe_resolves_labels_file_relative_to_itself(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "labels.yaml").write_text("Task 1:\n  Sub Task 1.2: null\n")
    recipe = tmp_path / "sub" / "recipe.yaml"
    recipe.write_text("labels:\n  file: labels.yaml\n  map: {person: 'Task 1/Sub Task 1.2'}\n")
    loaded = load_recipe(recipe)
    assert loaded.label_mapper()("person") == "Task 1/Sub Task 1.2"
    recipe.write_text("labels:\n  file: labels.yaml\n  map: {person: 'Task 9'}\n")
    with pytest.raises(ConfigError, match="recipe.yaml: labels.map: 'Task 9' not in the labels file"):
        load_recipe(recipe)
