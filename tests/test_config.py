"""``diffusionbert.config``: the decoding-options object, checked in one place, and the run config's checks."""

from __future__ import annotations

import math
import re

import pytest

from diffusionbert.config import DecodingConfig, load_config
from diffusionbert.errors import ConfigError
from diffusionbert.utils.runtime import default_device


def test_decoding_options_are_checked_once_with_one_line_errors() -> None:
    base = DecodingConfig()
    assert base.replace(steps=8, temperature=1).temperature == 1.0  # an int is a fine float
    for options, message in (
        ({"stpes": 3}, "unknown DecodingConfig option 'stpes'; did you mean 'steps'?"),
        ({"steps": "8"}, "steps='8' is not valid; expected int"),
        ({"steps": True}, "steps=True is not valid"),
        ({"steps": 0}, "steps=0 is not valid; allowed: steps >= 1"),
        ({"length": 0}, "length=0 is not valid"),
        ({"end": "eos"}, "end='eos' is not valid"),
        ({"top_p": 0.0}, "top_p=0.0 is not valid"),
        ({"top_k": -1}, "top_k=-1 is not valid"),
        ({"guidance": math.nan}, "guidance=nan is not valid; allowed: a finite number"),
        ({"guidance": -1.0}, "guidance=-1.0 is not valid"),
        ({"mbr": True}, "mbr chooses among several samples"),
        ({"sampler": ""}, "sampler='' is not valid"),
        ({"sampler_options": {"temperature": 0.5}}, "sampler_options names temperature"),
        ({"sampler_options": {"threshold": [1]}}, "sampler_options.threshold=[1] is not valid"),
        ({"seed": -1}, "seed=-1 is not valid"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)) as err:
            base.replace(**options)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("temperature", [1e-40, 1e-4, 1e308, -0.5])
def test_a_temperature_whose_arithmetic_is_not_finite_is_refused(temperature: float) -> None:
    allowed = "allowed: 0 (the most likely token) or 0.001 <= temperature <= 1000"
    with pytest.raises(ConfigError, match=re.escape(f"temperature={temperature!r} is not valid; {allowed}")):
        DecodingConfig(temperature=temperature)
    assert DecodingConfig(temperature=0.0).temperature == 0.0
    assert DecodingConfig(temperature=1e3).temperature == 1e3


def test_a_saved_decoding_names_its_file_in_errors() -> None:
    with pytest.raises(ConfigError, match=r"^run/final/decoding.json: steps=-3 is not valid"):
        DecodingConfig.from_dict({"steps": -3}, "run/final/decoding.json")
    with pytest.raises(ConfigError, match=r"decoding\.json must be a mapping of decoding options, got list"):
        DecodingConfig.from_dict([1, 2], "decoding.json")


def test_the_sampling_section_is_the_decoding_config(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("sampling:\n  sampler: confidence\n  steps: 16\n  guidance: 1.0\n")
    cfg = load_config(path)
    assert cfg.sampling == DecodingConfig(sampler="confidence", steps=16, guidance=1.0)
    with pytest.raises(ConfigError, match=r"unknown config key .sampling\.stepz."):
        load_config(path, ["sampling.stepz=3"])


def test_a_device_that_holds_no_data_is_refused() -> None:
    assert default_device("cpu").type == "cpu"
    for device in ("meta", "tpu7", "cpu:x"):
        with pytest.raises(ConfigError, match=f"device='{device}' is not valid; allowed: cpu, cuda, cuda:N"):
            default_device(device)
