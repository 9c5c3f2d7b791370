"""Registry: registration with a config class, build, typed errors with suggestions (unlearnkit.registry)."""

from __future__ import annotations

import pytest
from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import ConfigError
from unlearnkit.registry import METHODS, METRICS, Registry, suggest


class _Cfg(Frozen):
    alpha: float = Field(1.0, gt=0)
    steps: int = 3


def _registry() -> Registry:
    reg: Registry = Registry("widget")

    @reg.register("scaler", config=_Cfg)
    class Scaler:
        def __init__(self, cfg: _Cfg) -> None:
            self.cfg = cfg

    @reg.register("plain")
    class Plain:
        pass

    return reg


def test_build_passes_the_validated_config():
    reg = _registry()
    obj = reg.build("scaler", {"alpha": 2.5})
    assert isinstance(obj.cfg, _Cfg)
    assert obj.cfg.alpha == 2.5 and obj.cfg.steps == 3  # default filled in
    # a config object is passed through unchanged
    cfg = _Cfg(alpha=7.0)
    assert reg.build("scaler", cfg).cfg is cfg
    assert type(reg.build("plain")).__name__ == "Plain"
    assert reg.names() == ["plain", "scaler"]
    assert "scaler" in reg and "nope" not in reg and len(reg) == 2


def test_unknown_name_suggests_closest_and_lists_valid_names():
    reg = _registry()
    with pytest.raises(ConfigError) as exc:
        reg.get("scalar")
    msg = str(exc.value)
    assert "unknown widget 'scalar'" in msg
    assert "Did you mean 'scaler'?" in msg
    assert "plain, scaler" in msg
    # far-off names get the list but no suggestion
    with pytest.raises(ConfigError) as exc:
        reg.get("zzzzzzzz")
    assert "Did you mean" not in str(exc.value) and "plain, scaler" in str(exc.value)


def test_unknown_method_in_global_registry_suggests():
    import unlearnkit.methods  # noqa: F401  (registers the methods)

    with pytest.raises(ConfigError, match=r"Did you mean 'finetune'\?"):
        METHODS.entry("finetun")
    assert isinstance(ConfigError("x"), ValueError)  # `except ValueError` keeps working


def test_duplicate_registration_raises():
    reg = _registry()
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("scaler")(object)
    assert reg.names() == ["plain", "scaler"]  # the first registration is kept


@pytest.mark.parametrize("bad", ["", " x", "x ", "two words"])
def test_invalid_names_are_refused(bad):
    with pytest.raises(ConfigError, match="invalid"):
        Registry("widget").register(bad)


def test_unknown_param_names_allowed_keys():
    reg = _registry()
    with pytest.raises(ConfigError) as exc:
        reg.build("scaler", {"alpah": 1.0})
    msg = str(exc.value)
    assert "unknown key 'alpah'" in msg
    assert "Allowed keys: alpha, steps" in msg


def test_config_without_fields_says_it_takes_no_parameters():
    """A config class with no fields (e.g. the sequential executor's) must not print an empty 'Allowed keys: '."""

    class _Empty(Frozen):
        pass

    reg = Registry("executor")
    reg.register("sequential", config=_Empty)(type("Seq", (), {}))
    with pytest.raises(ConfigError) as exc:
        reg.validate_config("sequential", {"max_workers": 2})
    msg = str(exc.value)
    assert "unknown key 'max_workers'" in msg
    assert "takes no parameters" in msg and "Allowed keys" not in msg


def test_bad_param_value_names_the_field_and_value():
    reg = _registry()
    with pytest.raises(ConfigError) as exc:
        reg.build("scaler", {"alpha": -1})
    assert "alpha" in str(exc.value) and "-1" in str(exc.value)


def test_params_for_a_component_without_config_are_an_error():
    reg = _registry()
    with pytest.raises(ConfigError, match="takes no parameters"):
        reg.build("plain", {"x": 1})
    assert reg.validate_config("plain", None) is None


def test_unregister_removes_and_unknown_unregister_raises():
    reg = _registry()
    reg.unregister("plain")
    assert reg.names() == ["scaler"]
    with pytest.raises(ConfigError, match="unknown widget 'plain'"):
        reg.get("plain")
    with pytest.raises(ConfigError):
        reg.unregister("plain")


def test_suggest_helper():
    assert suggest("acuracy", ["accuracy", "mia_efficacy"]) == " Did you mean 'accuracy'?"
    assert suggest("qqq", ["accuracy"]) == ""


def test_global_registries_hold_the_foundation_components():
    import unlearnkit.methods  # noqa: F401
    import unlearnkit.metrics  # noqa: F401

    assert {"retrain", "finetune", "grad_ascent"} <= set(METHODS.names())
    assert {"accuracy", "mia_efficacy"} <= set(METRICS.names())


def test_allowed_keys_are_those_of_the_nested_section_and_absent_for_bad_values():
    """An unknown nested key lists the keys of its own section; a bad value does not list any keys (the key is
    allowed, its value is not)."""

    class _Data(Frozen):
        root: str = "."
        name: str = "cora"

    class _Track(Frozen):
        data: _Data = _Data()
        epochs: int = Field(1, ge=1)

    reg = Registry("track")
    reg.register("graph", config=_Track)(type("G", (), {}))
    with pytest.raises(ConfigError) as exc:
        reg.validate_config("graph", {"data": {"bogus": 1}})
    msg = str(exc.value)
    assert "unknown key 'data.bogus'" in msg and "Allowed keys under data: root, name" in msg
    assert "epochs" not in msg
    with pytest.raises(ConfigError) as exc:
        reg.validate_config("graph", {"epochs": 0})
    assert "epochs" in str(exc.value) and "Allowed keys" not in str(exc.value)
