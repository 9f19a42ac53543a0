"""The server serves a backend named the way the SDK names it: an installed plugin."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.helpers.plugins import PluginSite
from tests.helpers.server import MISTRAL_7B, runtime_client, text_body


def test_serve_in_background_takes_an_entry_point_name(
    plugin: PluginSite, make_server: Callable[..., Any]
) -> None:
    server = make_server("shout")
    response = runtime_client(server).invoke_model(modelId=MISTRAL_7B, body=text_body("psst"))
    assert json.loads(response["body"].read())["outputs"][0]["text"] == "PSST"
