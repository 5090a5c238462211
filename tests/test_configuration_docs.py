"""Every environment variable the worker reads is documented, with its real default,
in the README's table and in `.runpod/hub.json`."""

from __future__ import annotations

import json
import re

from conftest import ROOT
from embedding_worker.settings import WorkerSettings

README = (ROOT / "README.md").read_text()
HUB = json.loads((ROOT / ".runpod" / "hub.json").read_text())
HUB_ENV = {item["key"]: item["input"] for item in HUB["config"]["env"]}
DOCUMENTED = dict(re.findall(r"^\| `([A-Z_]+)` \| (.+?) \|", README, re.M))
README_ENV = {name: default for name, default in DOCUMENTED.items() if not name.startswith("LOCAL_")}
LOCAL_ENV = {name: default for name, default in DOCUMENTED.items() if name.startswith("LOCAL_")}


def settings_defaults() -> dict[str, object]:
    return {
        name.upper(): (field.default.value if hasattr(field.default, "value") else field.default)
        for name, field in WorkerSettings.model_fields.items()
    }


def test_every_setting_is_in_the_readme_with_its_default():
    for variable, default in settings_defaults().items():
        assert variable in README_ENV, variable
        if variable not in ("MODEL_NAMES", "SERVED_MODEL_NAMES", "MODEL_REVISIONS", "MODEL_PROMPTS", "PORT_HEALTH"):
            documented = README_ENV[variable].strip("`")
            assert documented == (f"{default:g}" if isinstance(default, float) else str(default))


def test_every_setting_is_in_hub_json_with_its_default():
    for variable, default in settings_defaults().items():
        assert variable in HUB_ENV, variable
        if variable != "MODEL_NAMES":
            assert HUB_ENV[variable]["default"] == default, variable


def test_documents_nothing_the_worker_does_not_read():
    read = set(settings_defaults()) | {"RUNPOD_LOG_LEVEL", "HF_TOKEN"}
    assert set(HUB_ENV) == read
    assert set(README_ENV) == read


def test_every_local_endpoint_setting_is_in_the_readme_with_its_default():
    from embedding_worker.serving.local_endpoint import LocalEndpointConfig

    fields = LocalEndpointConfig.model_fields
    flags = {"host", "port", "api_key"}  # documented with their flags
    assert set(LOCAL_ENV) == {f"LOCAL_{name.upper()}" for name in fields if name not in flags}
    for name, field in fields.items():
        if name in flags:
            continue
        documented = LOCAL_ENV[f"LOCAL_{name.upper()}"].strip("`")
        default = field.default
        assert documented == ("*(none)*" if default == "" else f"{default:g}" if isinstance(default, float)
                              else str(default)), name
