"""Config schemas and loader: typed errors, `extends:`, `--set`, YAML typing, frozen values (unlearnkit.config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from unlearnkit.bench import load_config
from unlearnkit.config import parse_overrides
from unlearnkit.config.loader import apply_overrides, config_hash, deep_merge, dump_yaml, load_raw
from unlearnkit.config.schema import ScenarioConfig, TrainConfig
from unlearnkit.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- typed errors for bad input ------------------------------------------------------------------------------------
def test_unknown_method_suggests_the_closest_name():
    with pytest.raises(ConfigError) as exc:
        load_config(data={"methods": ["finetun"]})
    msg = str(exc.value)
    assert "unknown method 'finetun'" in msg and "Did you mean 'finetune'?" in msg
    assert "grad_ascent" in msg  # lists the valid names


def test_unknown_key_names_the_allowed_keys():
    with pytest.raises(ConfigError) as exc:
        load_config(data={"train": {"lrr": 0.1}})
    msg = str(exc.value)
    assert "unknown key 'train.lrr'" in msg and "Did you mean 'lr'?" in msg
    for k in ("epochs", "batch_size", "optimizer", "lr", "momentum", "scheduler", "grad_clip"):
        assert k in msg


def test_unknown_top_level_key_lists_top_level_keys():
    with pytest.raises(ConfigError) as exc:
        load_config(data={"seed": 1})
    msg = str(exc.value)
    assert "unknown key 'seed'" in msg and "Did you mean 'seeds'?" in msg
    for k in ("data", "model", "scenario", "train", "methods", "metrics", "seeds", "engine"):
        assert k in msg


def test_unknown_method_parameter_names_the_method_keys():
    with pytest.raises(ConfigError) as exc:
        load_config(data={"methods": [{"name": "finetune", "learning_rate": 0.1}]})
    msg = str(exc.value)
    assert "learning_rate" in msg and "finetune" in msg
    assert "Allowed keys: epochs, lr, batch_size" in msg


def test_unknown_metric_and_dataset_suggest():
    with pytest.raises(ConfigError, match=r"Did you mean 'accuracy'\?"):
        load_config(data={"metrics": ["acuracy"]})
    with pytest.raises(ConfigError, match=r"Did you mean 'digits'\?"):
        load_config(data={"data": {"name": "digit"}})


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1, 1.0, 1.5])
def test_forget_fraction_must_be_strictly_between_0_and_1(fraction):
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        load_config(data={"scenario": {"kind": "random", "fraction": fraction}})


def test_bad_value_reports_what_was_given():
    with pytest.raises(ConfigError) as exc:
        load_config(data={"train": {"epochs": 0}})
    assert "train.epochs" in str(exc.value) and "0" in str(exc.value)
    with pytest.raises(ConfigError, match="nesterov"):
        load_config(data={"train": {"optimizer": "adam", "nesterov": True}})


def test_seeds_count_and_duplicates():
    assert load_config(data={"seeds": 3}).seeds == [0, 1, 2]
    with pytest.raises(ConfigError, match="duplicates"):
        load_config(data={"seeds": [1, 1]})
    with pytest.raises(ConfigError, match="same label"):
        load_config(data={"methods": ["finetune", {"name": "finetune", "lr": 0.5}]})
    cfg = load_config(data={"methods": ["finetune", {"name": "finetune", "lr": 0.5, "label": "ft_hi"}]})
    assert [m.label for m in cfg.methods] == ["finetune", "ft_hi"]
    assert cfg.methods[1].params["lr"] == 0.5 and cfg.methods[0].params["lr"] == 0.01


# -- C25: scenario requires its parameters; no silent class default ------------------------------------------------
def test_c25_random_scenario_requires_fraction_or_count():
    with pytest.raises(ValidationError, match="exactly one of 'fraction'"):
        ScenarioConfig()
    with pytest.raises(ValidationError, match="exactly one of 'fraction'"):
        ScenarioConfig(kind="random", fraction=0.1, count=10)
    with pytest.raises(ConfigError, match="exactly one of 'fraction'"):
        load_config(data={"scenario": {"kind": "random"}})
    assert ScenarioConfig(kind="random", count=100).count == 100


def test_c25_class_scenario_requires_classes():
    for scen in ({"kind": "class"}, {"kind": "class", "classes": []}):
        with pytest.raises(ConfigError, match="needs 'classes'"):
            load_config(data={"scenario": scen})
    with pytest.raises(ConfigError, match="does not use"):
        load_config(data={"scenario": {"kind": "class", "classes": [3], "fraction": 0.1}})
    with pytest.raises(ConfigError, match="does not use"):
        load_config(data={"scenario": {"kind": "random", "fraction": 0.1, "classes": [0]}})


def test_default_scenario_is_random_not_a_class():
    cfg = load_config()
    assert cfg.scenario.kind == "random" and cfg.scenario.classes is None and cfg.scenario.fraction == 0.1


# -- extends -------------------------------------------------------------------------------------------------------
def test_extends_deep_merges_with_paths_relative_to_the_file(tmp_path):
    write(tmp_path / "base" / "base.yaml", """
name: base
train: {epochs: 7, lr: 0.3, batch_size: 16}
metrics: [accuracy, mia_efficacy]
seeds: [0, 1, 2]
""")
    child = write(tmp_path / "exp" / "child.yaml", """
extends: ../base/base.yaml
name: child
train: {lr: 0.05}
metrics: [accuracy]
""")
    cfg = load_config(child)
    assert cfg.name == "child"
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size) == (7, 0.05, 16)  # mapping merged key by key
    assert cfg.metrics == ["accuracy"]  # lists replace, never concatenate
    assert cfg.seeds == [0, 1, 2]


def test_extends_list_applies_parents_in_order(tmp_path):
    write(tmp_path / "a.yaml", "train: {epochs: 1, lr: 0.1}\nseeds: [5]\n")
    write(tmp_path / "b.yaml", "train: {epochs: 2}\n")
    child = write(tmp_path / "c.yaml", "extends: [a.yaml, b.yaml]\n")
    raw = load_raw(child)
    assert raw == {"train": {"epochs": 2, "lr": 0.1}, "seeds": [5]}


def test_extends_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "extends: b.yaml\nname: a\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", "extends: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "self.yaml")


def test_extends_missing_parent_and_bad_type(tmp_path):
    write(tmp_path / "x.yaml", "extends: nope.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "x.yaml")
    write(tmp_path / "y.yaml", "extends: {a: 1}\n")
    with pytest.raises(ConfigError, match="'extends' must be"):
        load_config(tmp_path / "y.yaml")


def test_extends_a_bundled_config_by_name(tmp_path):
    """`extends: recsys_synthetic` works like `unlearnkit run recsys_synthetic`; a local file of that name wins."""
    write(tmp_path / "x.yaml", "extends: recsys_synthetic\nseeds: 1\n")
    cfg = load_config(tmp_path / "x.yaml")
    assert cfg.track == "recsys" and cfg.name == "recsys_synthetic" and len(cfg.seeds) == 1
    write(tmp_path / "z.yaml", "extends: llm/tofu_tiny\n")
    assert load_config(tmp_path / "z.yaml").track == "llm"
    write(tmp_path / "recsys_synthetic", "name: local\n")
    assert load_config(tmp_path / "x.yaml").name == "local"


def test_deep_merge_does_not_mutate_inputs():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    over = {"a": {"c": [3]}, "e": 2}
    out = deep_merge(base, over)
    assert out == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1} and over == {"a": {"c": [3]}, "e": 2}


def test_yaml_tags_that_construct_objects_are_refused(tmp_path):
    p = write(tmp_path / "evil.yaml", "name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_non_mapping_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path / "l.yaml", "- a\n- b\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_misspelt_bundled_name_gets_a_did_you_mean(tmp_path, monkeypatch):
    from unlearnkit.config.loader import resolve_config_path

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="Did you mean 'digits_random10'"):
        resolve_config_path("digits_randm10")
    with pytest.raises(ConfigError, match="Did you mean 'llm/tofu_tiny'"):
        resolve_config_path("configs/llm/tofu_tny.yaml")
    with pytest.raises(ConfigError) as err:
        resolve_config_path("zzzz_nothing_like_it")
    assert "Did you mean" not in str(err.value)


def test_a_missing_users_file_never_falls_back_to_the_bundled_config_of_the_same_name(tmp_path, monkeypatch):
    """``myexps/digits_random10.yaml`` that does not exist (a typo in the folder) used to run the bundled
    digits_random10 without a word; only bare names and ``configs/...`` name bundled configs."""
    from unlearnkit.config.loader import resolve_config_path

    monkeypatch.chdir(tmp_path)
    for given in (tmp_path / "myexps" / "digits_random10.yaml", "myexps/digits_random10.yaml",
                  "myexps/continual_digits"):
        with pytest.raises(ConfigError, match="config file not found"):
            resolve_config_path(given)
    for given in ("digits_random10", "digits_random10.yaml", "configs/digits_random10.yaml"):
        assert resolve_config_path(given).name == "digits_random10.yaml"


# -- --set overrides -----------------------------------------------------------------------------------------------
def test_set_overrides_with_yaml_typing():
    parsed = dict((".".join(k), v) for k, v in parse_overrides(
        ["train.lr=1e-4", "train.epochs=3", "data.root=/x/y", "seeds=[1, 2]", "cache_dir=null", "a.b=true",
         "x=5E+2", "y=1.5"]
    ))
    assert parsed["train.lr"] == 1e-4 and isinstance(parsed["train.lr"], float)  # YAML 1.1 would say "1e-4" (str)
    assert parsed["train.epochs"] == 3 and isinstance(parsed["train.epochs"], int)
    assert parsed["data.root"] == "/x/y"
    assert parsed["seeds"] == [1, 2] and parsed["cache_dir"] is None and parsed["a.b"] is True
    assert parsed["x"] == 500.0 and parsed["y"] == 1.5


def test_exponent_floats_in_yaml_files_are_numbers(tmp_path):
    p = write(tmp_path / "e.yaml", "train: {lr: 1e-4, weight_decay: 5e-4}\n")
    raw = load_raw(p)
    assert raw["train"] == {"lr": 1e-4, "weight_decay": 5e-4}


def test_set_list_index_on_methods():
    cfg = load_config(data={"methods": ["finetune", "grad_ascent"]}, overrides=["methods.1.lr=0.5"])
    assert cfg.methods[1].name == "grad_ascent" and cfg.methods[1].params["lr"] == 0.5
    assert cfg.methods[0].params["lr"] == 0.01  # untouched
    cfg = load_config(data={"methods": [{"name": "finetune", "epochs": 2}]}, overrides=["methods.0.epochs=4"])
    assert cfg.methods[0].params["epochs"] == 4
    with pytest.raises(ConfigError, match="not a valid index"):
        load_config(data={"methods": ["finetune"]}, overrides=["methods.3.lr=0.5"])
    with pytest.raises(ConfigError, match="not a valid index"):
        load_config(data={"methods": ["finetune"]}, overrides=["methods.x.lr=0.5"])


def test_set_overrides_apply_after_extends(tmp_path):
    write(tmp_path / "base.yaml", "train: {epochs: 7, lr: 0.3}\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\ntrain: {lr: 0.2}\n")
    cfg = load_config(child, ["train.lr=0.01", "scenario.fraction=0.2"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.scenario.fraction) == (7, 0.01, 0.2)


def test_set_through_a_value_is_an_error():
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"name": "x"}, [(["name", "sub"], 1)])


def test_c47_whitespace_is_tolerated():
    assert parse_overrides(["  train.lr  =  0.5  "]) == [(["train", "lr"], 0.5)]
    assert parse_overrides(["train . lr=0.5"]) == [(["train", "lr"], 0.5)]
    cfg = load_config(overrides=[" name = my_run "])
    assert cfg.name == "my_run"


@pytest.mark.parametrize("bad", ["=1", "  =1", ".lr=1", "train..lr=1", "train.=1", "train.lr", "  "])
def test_c47_empty_keys_and_missing_equals_are_rejected(bad):
    with pytest.raises(ConfigError):
        parse_overrides([bad])


def test_c47_empty_experiment_name_never_runs():
    for ov in (["name="], ["name=   "], ["name=a b"]):
        with pytest.raises(ConfigError, match="name"):
            load_config(overrides=ov)


# -- frozen values, hashing, schema ---------------------------------------------------------------------------------
def test_configs_are_frozen():
    cfg = load_config()
    with pytest.raises(ValidationError):
        cfg.train.lr = 1.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        cfg.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        TrainConfig(lr=0.1).epochs = 3  # type: ignore[misc]
    assert cfg.train.lr == 0.1


def test_config_hash_is_stable_and_ignores_progress_only():
    a = load_config(data={"engine": {"progress": True}})
    b = load_config(data={"engine": {"progress": False}})
    c = load_config(data={"train": {"lr": 0.2}})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)
    assert len(config_hash(a)) == 64
    # the dumped YAML reloads to the same config (round trip)
    again = load_config(data=__import__("yaml").safe_load(dump_yaml(c)))
    assert again == c and config_hash(again) == config_hash(c)


def test_oracle_recipe_defaults_to_train():
    cfg = load_config(data={"train": {"lr": 0.3}})
    assert cfg.oracle_recipe == cfg.train
    cfg = load_config(data={"train": {"lr": 0.3}, "oracle": {"lr": 0.2}})
    assert cfg.oracle_recipe.lr == 0.2


def test_json_schema_contains_the_top_level_keys():
    from unlearnkit import ClassifierExperiment

    schema = json.loads(json.dumps(ClassifierExperiment.model_json_schema()))
    assert schema["type"] == "object" and schema.get("additionalProperties") is False
    for k in ("name", "data", "model", "scenario", "train", "oracle", "methods", "metrics", "seeds", "engine",
              "output_dir"):
        assert k in schema["properties"]


def test_bundled_default_config_loads():
    cfg = load_config("digits_random10")
    assert cfg.name == "digits_random10" and cfg.scenario.kind == "random" and cfg.scenario.fraction == 0.1
    assert cfg.seeds == [0, 1, 2]
    assert [m.label for m in cfg.methods][:3] == ["retrain", "finetune", "grad_ascent"]


# -- method labels name result rows and files -------------------------------------------------------------------------
def test_oracle_label_is_reserved_for_retrain():
    with pytest.raises(ConfigError, match="reserved for the oracle row"):
        load_config(data={"methods": [{"name": "grad_ascent", "label": "retrain"}]})
    assert [m.label for m in load_config(data={"methods": ["retrain", "finetune"]}).methods] == ["retrain", "finetune"]


def test_recipe_on_the_oracle_row_is_not_silently_ignored():
    with pytest.raises(ConfigError, match="would be ignored"):
        load_config(data={"methods": [{"name": "retrain", "recipe": {"epochs": 3}}]})
    cfg = load_config(data={"methods": [{"name": "retrain", "recipe": {"epochs": 3}, "label": "retrain_e3"}]})
    assert cfg.methods[0].params["recipe"]["epochs"] == 3 and cfg.methods[0].label == "retrain_e3"


@pytest.mark.parametrize("label", ["../escape", "a/b", "a b", "", ".."])
def test_labels_that_are_not_plain_names_are_refused(label):
    with pytest.raises(ConfigError, match="label"):
        load_config(data={"methods": [{"name": "finetune", "label": label}]})


def test_extends_chain_resolves_each_path_relative_to_its_own_file(tmp_path):
    write(tmp_path / "a" / "root.yaml", "train: {epochs: 9, lr: 0.3}\nname: root\n")
    write(tmp_path / "b" / "mid.yaml", "extends: ../a/root.yaml\ntrain: {lr: 0.2}\n")
    leaf = write(tmp_path / "c" / "d" / "leaf.yaml", "extends: ../../b/mid.yaml\nname: leaf\n")
    cfg = load_config(leaf)
    assert (cfg.name, cfg.train.epochs, cfg.train.lr) == ("leaf", 9, 0.2)


def test_c47_bundled_shell_scripts_parse():
    """``bash -n`` on every shell script of the repository (CI's entry point included)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    scripts = [root / ".ci" / "run", *(p for p in root.rglob("*.sh") if ".venv" not in p.parts)]
    assert (root / ".ci" / "run").is_file()
    for s in scripts:
        r = subprocess.run(["bash", "-n", str(s)], capture_output=True, text=True)
        assert r.returncode == 0, f"{s}: {r.stderr}"


def test_a_field_inherited_from_an_extended_config_that_the_new_kind_does_not_use_says_how_to_drop_it(tmp_path):
    """README's continual scenario in a config that extends digits_random10 (fraction: 0.1): 'remove them' is no
    help when the field comes from the base; the message says to set it to null."""
    p = tmp_path / "cont.yaml"
    p.write_text("extends: digits_random10\nname: cont\n"
                 "scenario: {kind: continual, tasks: 3, sequence: 'L1 L2 U1 L3'}\n")
    with pytest.raises(ConfigError, match=r"does not use \['fraction'\].*fraction: null"):
        load_config(p)
